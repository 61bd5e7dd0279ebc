-- Record a lead's assignment and close its pending crossing, once.
-- A re-engagement of a lead a rep held (sal, sql, opportunity) that is routed
-- to a rep (its owner was away) starts over as mql with the new owner.
-- KEYS[1] lead hash
-- ARGV 1 crossing  2 assignment_id  3 rep_id  4 rep_name  5 team  6 rule
--      7 rules_version  8 assigned_ts
if redis.call('HGET', KEYS[1], 'pending_crossing') ~= ARGV[1] then return 0 end
local stage = redis.call('HGET', KEYS[1], 'stage') or ''
if stage ~= 'mql' and redis.call('HGET', KEYS[1], 're_crossing') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'stage', 'mql', 'mql_ts', ARGV[8], 'stage_ts', ARGV[8])
  redis.call('HDEL', KEYS[1], 'accepted_by')
end
redis.call('HSET', KEYS[1], 'assignment_id', ARGV[2], 'owner', ARGV[3], 'owner_name', ARGV[4],
  'team', ARGV[5], 'rule', ARGV[6], 'rules_version', ARGV[7], 'assigned_ts', ARGV[8])
redis.call('HDEL', KEYS[1], 'pending_event', 'pending_crossing')
return 1
