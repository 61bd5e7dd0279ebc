-- Step 3: drop a merged source's data, keeping only its forwarding address
-- (source's hash slot only).
-- KEYS[1..4] source hash, seen, reasons, recent   ARGV[1] target  ARGV[2] ttl
if redis.call('HGET', KEYS[1], 'merged_into') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local k = flat[i]
  if k ~= 'merged_into' and k ~= 'first_seen' then redis.call('HDEL', KEYS[1], k) end
end
redis.call('HSET', KEYS[1], 'cleaned', '1')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
