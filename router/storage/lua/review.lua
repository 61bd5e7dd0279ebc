-- The review queue's lead-side step (router/worker/review.py), atomically on the lead's slot.
--
-- hold     a suspicious crossing is held for review instead of going to a rep: recorded once per
--          crossing (a redelivered or resumed crossing finds it held and stays held)
-- release  ops release a held crossing: routed normally by the next worker tick
-- dismiss  ops dismiss it as spam: the crossing is closed (not ready, nurture), nobody is alerted
-- Every change appends one JSON entry to the lead's history list.
--
-- KEYS[1] lead hash  KEYS[2] history list
-- ARGV 1 op  2 crossing ('' = the lead's pending one)  3 now  4 JSON details (hold: trust, reasons,
--      event)  5 history kept  6 who (release, dismiss)
-- Returns {status = held | already_held | released | dismissed | stale | not_held, state, crossing}
local lead, hist = KEYS[1], KEYS[2]
local op, now = ARGV[1], tonumber(ARGV[3])
local pending = redis.call('HGET', lead, 'pending_crossing')
local crossing = ARGV[2]
if crossing == '' then crossing = pending or '' end
local state = redis.call('HGET', lead, 'review') or ''
local held_crossing = redis.call('HGET', lead, 'review_crossing') or ''

local function fmt(x) return string.format('%.17g', x) end
local function log(entry)
  entry.ts = now
  entry.crossing = tonumber(crossing)
  redis.call('RPUSH', hist, cjson.encode(entry))
  redis.call('LTRIM', hist, -tonumber(ARGV[5]), -1)
end
local function answer(status)
  return cjson.encode({status = status, state = redis.call('HGET', lead, 'review') or '', crossing = crossing})
end

if op == 'hold' then
  if not pending or pending ~= crossing then return answer('stale') end
  if held_crossing == crossing and state ~= '' then return answer('already_held') end
  redis.call('HSET', lead, 'review', 'held', 'review_crossing', crossing, 'review_ts', fmt(now),
    'review_info', ARGV[4])
  local info = cjson.decode(ARGV[4])
  log({action = 'review_held', trust = info.trust, reasons = info.reasons})
  return answer('held')
end

if state ~= 'held' or held_crossing ~= crossing or pending ~= crossing then return answer('not_held') end
if op == 'release' then
  redis.call('HSET', lead, 'review', 'released', 'review_by', ARGV[6], 'review_done_ts', fmt(now))
  log({action = 'review_released', by = ARGV[6]})
  return answer('released')
end
if op == 'dismiss' then
  redis.call('HSET', lead, 'review', 'dismissed', 'review_by', ARGV[6], 'review_done_ts', fmt(now),
    'ready', '0', 'stage', 'nurture')
  redis.call('HDEL', lead, 'pending_event', 'pending_crossing')
  log({action = 'review_dismissed', by = ARGV[6]})
  return answer('dismissed')
end
return redis.error_reply('review.lua: unknown op ' .. tostring(op))
