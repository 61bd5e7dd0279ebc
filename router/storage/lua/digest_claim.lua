-- Claim the rep's digest: resume the batch in flight, or turn the queue into a new batch.
-- KEYS[1] queue, KEYS[2] batch, KEYS[3] meta (one slot: {D:<rep>})
-- ARGV[1] now, ARGV[2] lease until, ARGV[3] owner token
-- Returns {'busy'} (another worker holds the lease), {'empty'}, or
-- {'ok', seq, since, until, batch field/value pairs...}.
local lease = tonumber(redis.call('HGET', KEYS[3], 'lease') or '0') or 0
local owner = redis.call('HGET', KEYS[3], 'owner')
if lease > tonumber(ARGV[1]) and owner ~= ARGV[3] then return {'busy'} end
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('HLEN', KEYS[1]) == 0 then return {'empty'} end
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('HINCRBY', KEYS[3], 'seq', 1)
  redis.call('HSET', KEYS[3], 'until', ARGV[1])
end
redis.call('HSET', KEYS[3], 'lease', ARGV[2], 'owner', ARGV[3])
local meta = redis.call('HMGET', KEYS[3], 'seq', 'since', 'until')
local out = {'ok', meta[1] or '0', meta[2] or '', meta[3] or ''}
local items = redis.call('HGETALL', KEYS[2])
for i = 1, #items do out[#out + 1] = items[i] end
return out
