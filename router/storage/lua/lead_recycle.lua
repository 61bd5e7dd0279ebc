-- The lead-side step of a due recycle (router/worker/scheduler.py), atomic on the lead's slot.
--
-- The due shards only say "look at this lead then"; the truth is here.  The exact
-- moment is recomputed from the stored score: t = asof + h * log2(score / rb).
--   gone    no such lead, merged away or forgotten      -> drop the item
--   cancel  not sales-ready and unaccepted (mql) any more: accepted, rejected,
--           recycled by an event, never armed           -> drop the item
--   retry   its routing has not committed yet            -> look again a little later
--   later   not due yet (more points since it was indexed) -> re-arm at `at`
--   ok      recycled to nurture now, as of `at` (the exact moment), once; the
--           sales-ready rule re-arms and the SLA steps of its assignment lapse
--
-- KEYS[1] lead hash  KEYS[2] history list
-- ARGV 1 now  2 half-life s  3 recycle_below  4 history kept
local lead, hist = KEYS[1], KEYS[2]
local now, h, rb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

local function fmt(x) return string.format('%.17g', x) end

if redis.call('EXISTS', lead) == 0 or redis.call('HEXISTS', lead, 'merged_into') == 1
    or redis.call('HGET', lead, 'forgotten') == '1' then
  return cjson.encode({status = 'gone'})
end
if redis.call('HGET', lead, 'ready') ~= '1' or redis.call('HGET', lead, 'stage') ~= 'mql'
    or redis.call('HEXISTS', lead, 'recycle_at') == 0 or not (rb and rb > 0) then
  redis.call('HDEL', lead, 'recycle_at')
  return cjson.encode({status = 'cancel', stage = redis.call('HGET', lead, 'stage') or ''})
end
if redis.call('HEXISTS', lead, 'pending_event') == 1 then
  return cjson.encode({status = 'retry'})
end
local v = tonumber(redis.call('HGET', lead, 'score') or '0')
local a = tonumber(redis.call('HGET', lead, 'asof') or '0')
local t = a
if a > 0 and v > rb then t = a + h * math.log(v / rb) / math.log(2) end
if now < t then
  redis.call('HSET', lead, 'recycle_at', fmt(t))
  return cjson.encode({status = 'later', at = t})
end
local owner = redis.call('HGET', lead, 'owner') or ''
local team = redis.call('HGET', lead, 'team') or ''
local aid = redis.call('HGET', lead, 'assignment_id') or ''
redis.call('HSET', lead, 'ready', '0', 'stage', 'nurture', 'recycled_ts', fmt(t), 'stage_ts', fmt(now),
  'last_outcome', 'recycled', 'last_outcome_ts', fmt(t), 'last_outcome_reason', 'engagement fell below ' .. fmt(rb),
  'last_outcome_rep', owner, 'last_outcome_rep_name', redis.call('HGET', lead, 'owner_name') or '')
redis.call('HDEL', lead, 'recycle_at')
redis.call('HINCRBY', lead, 'recycles', 1)
redis.call('RPUSH', hist, cjson.encode({action = 'recycled', ts = now, at = t, rep = owner, team = team,
                                        assignment_id = aid, from = 'mql', to = 'nurture',
                                        reason = 'engagement decayed below recycle_below'}))
redis.call('LTRIM', hist, -tonumber(ARGV[4]), -1)
return cjson.encode({status = 'ok', at = t, owner = owner, team = team, assignment_id = aid,
                     mql_ts = tonumber(redis.call('HGET', lead, 'mql_ts') or '0')})
