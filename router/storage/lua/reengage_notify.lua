-- Close a re-engagement of a lead its owner still holds (sal, sql, opportunity):
-- the owner was told (the alert is published first); nothing is routed, the
-- stage and the assignment stay.  Once per crossing: a repeat returns 0.
-- KEYS[1] lead hash  KEYS[2] history list
-- ARGV 1 crossing  2 alert id  3 rep_id  4 rep_name  5 now  6 history kept
local lead, hist = KEYS[1], KEYS[2]
if redis.call('HGET', lead, 'pending_crossing') ~= ARGV[1] then return 0 end
redis.call('HDEL', lead, 'pending_event', 'pending_crossing')
redis.call('HSET', lead, 're_notified', ARGV[1])
redis.call('RPUSH', hist, cjson.encode({action = 'reengage_notified', rep = ARGV[3], rep_name = ARGV[4],
  assignment_id = ARGV[2], crossing = tonumber(ARGV[1]), stage = redis.call('HGET', lead, 'stage') or '',
  ts = tonumber(ARGV[5])}))
redis.call('LTRIM', hist, -tonumber(ARGV[6]), -1)
return 1
