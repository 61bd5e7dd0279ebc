-- Claim up to ARGV[3] SLA items due by ARGV[1] from one step's sorted set, atomically.
-- A claimed item is not removed but leased: its due time moves to ARGV[2], so a
-- second ticker never sees it, and if this ticker dies mid-step it comes due
-- again after the lease.  The caller removes it (ZREM) once the step is done;
-- the lead-side step is idempotent per assignment, so a re-run after a lease
-- expiry does not repeat it.
-- KEYS[1] sla step zset   ARGV 1 now  2 lease until  3 limit
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(items) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m) end
return items
