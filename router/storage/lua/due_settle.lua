-- Settle one claimed due item (router/storage/lua/sla_claim.lua leased it), atomically.
-- Only while the item still carries this claimer's lease: if its owner re-armed it
-- meanwhile (a new score, a new assignment), that newer due time stands.
-- KEYS[1] due zset   ARGV 1 member  2 the lease (due time the claim set)  3 next due time ('' = done: remove)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
end
return 1
