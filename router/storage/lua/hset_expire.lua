-- Write fields of one hash and (re)set its time to live in one step, so no
-- reader ever sees the fields without the expiry (one key: any Redis Cluster slot).
-- KEYS[1] the hash   ARGV 1 ttl seconds (> 0)  2.. field, value, field, value...
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
