-- Take a lead out of its account in one step: members, engaged and roles
-- (all keys of one account share its {C:...} slot).
-- KEYS[1] members  KEYS[2] engaged  KEYS[3] roles   ARGV 1 lead id
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[3], ARGV[1])
