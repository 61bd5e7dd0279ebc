-- The digest is out: drop the batch and the lease (only the lease holder may).
-- KEYS[1] queue, KEYS[2] batch, KEYS[3] meta; ARGV[1] owner token
if redis.call('HGET', KEYS[3], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local last = redis.call('HGET', KEYS[3], 'until')
if last then redis.call('HSET', KEYS[3], 'since', last) end
redis.call('HDEL', KEYS[3], 'lease', 'owner')
return 1
