-- Give a sorted-set member a new name, keeping its score, in one step (forget
-- keeps a rep's capacity count but not whose lead it was).
-- KEYS[1] the sorted set   ARGV 1 old member  2 new member
-- Returns 1 when the old member was there.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], score, ARGV[2])
return 1
