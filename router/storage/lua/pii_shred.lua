-- Shred a person's data key and leave the tombstone in one step: no moment
-- where the key is gone and the collector does not yet drop the person's events.
-- KEYS[1] the data key  KEYS[2] the tombstone (same {P:subject} slot)   ARGV 1 forget time
-- Returns 1 when a data key existed.
local deleted = redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1])
return deleted
