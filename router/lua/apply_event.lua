-- Apply one scored event to one lead, atomically.
--
-- De-duplicates by event id (Kafka delivers at least once), adds the points
-- with exact continuous exponential decay, keeps the reasons and the activity
-- timeline, and records a sales-ready crossing exactly once, before anything
-- acts on it.  Every key is in the lead's hash slot.  (Merging an anonymous
-- profile into a lead is done beforehand by the merge_* scripts.)
--
-- KEYS[1..4]  lead hash, seen zset, reasons list, recent list
-- ARGV[1]     the event, JSON: e event_id, t ts, p points, y type, s summary
--             (JSON text), h hand_raiser, f fields {name: value}, m email,
--             i lead_id, u user_id, r [reason JSON texts]
-- ARGV[2]     the batch's settings, JSON: th threshold, hl half_life_s,
--             now, sw seen_window_s, rk reasons_kept, ck recent_kept
-- (One JSON argument per event keeps the client's per-argument cost out of
-- the hot path; cjson decodes it in C.)
local ev = cjson.decode(ARGV[1])
local cfg = cjson.decode(ARGV[2])
local lead, seen, reasons, recent = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local eid = ev.e
local ts = ev.t
local pts = ev.p
local thr = cfg.th
local h = cfg.hl
local now = cfg.now

local function fmt(x) return string.format('%.17g', x) end

local function decayed(v, asof, t)
  if asof <= 0 or v == 0 or t <= asof then return v end
  return v * math.pow(2, -(t - asof) / h)
end

-- Points earned at `at` join a score kept as of `asof`; the result does not
-- depend on the order events arrive in.
local function add(v, asof, p, at)
  if asof <= 0 then return p, at end
  if at >= asof then return decayed(v, asof, at) + p, at end
  return v + p * math.pow(2, -(asof - at) / h), asof
end

local function snapshot(status, extra)
  local out = extra or {}
  out['status'] = status
  local flat = redis.call('HGETALL', lead)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  out['lead'] = fields
  out['reasons'] = redis.call('LRANGE', reasons, 0, 19)
  out['recent'] = redis.call('LRANGE', recent, 0, 9)
  return cjson.encode(out)
end

local merged_into = redis.call('HGET', lead, 'merged_into')
if merged_into then
  return cjson.encode({status = 'moved', to = merged_into})
end

if redis.call('ZSCORE', seen, eid) then
  if redis.call('HGET', lead, 'pending_event') == eid then
    -- This event fired a crossing whose routing never finished: resume it.
    return snapshot('resume', {
      crossing = tonumber(redis.call('HGET', lead, 'pending_crossing')),
      trigger = redis.call('HGET', lead, 'last_trigger'),
    })
  end
  return cjson.encode({status = 'duplicate'})
end

redis.call('ZADD', seen, now, eid)
redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - cfg.sw)

local v = tonumber(redis.call('HGET', lead, 'score') or '0')
local a = tonumber(redis.call('HGET', lead, 'asof') or '0')
local at = ts
if a > at then at = a end
local before = decayed(v, a, at)
local nv, na = add(v, a, pts, ts)
local after = decayed(nv, na, at)
redis.call('HSET', lead, 'score', fmt(nv), 'asof', fmt(na), 'lead_id', ev.i, 'last_seen', fmt(at))
redis.call('HSETNX', lead, 'first_seen', fmt(ts))
redis.call('HINCRBY', lead, 'events', 1)
redis.call('HINCRBY', lead, 'n:' .. ev.y, 1)
redis.call('HSET', lead, 'last_type', ev.y)

local email = ev.m or ''
if email ~= '' then redis.call('HSET', lead, 'email', email) end
if ev.u and ev.u ~= '' then redis.call('HSET', lead, 'user_id', ev.u) end
for k, fv in pairs(ev.f or {}) do redis.call('HSET', lead, 'f:' .. k, fv) end
local stage = redis.call('HGET', lead, 'stage')
if not stage or (stage == 'anonymous' and email ~= '') then
  if redis.call('HEXISTS', lead, 'email') == 1 then stage = 'known' else stage = 'anonymous' end
  redis.call('HSET', lead, 'stage', stage)
end

local rs = ev.r or {}
if #rs > 0 then
  redis.call('LPUSH', reasons, unpack(rs))
  redis.call('LTRIM', reasons, 0, cfg.rk - 1)
end
redis.call('LPUSH', recent, ev.s)
redis.call('LTRIM', recent, 0, cfg.ck - 1)

-- A crossing fires once: the `ready` flag is set in this same step and only a
-- recycle (rep rejection, decay below the recycle level) clears it.  Only a
-- lead with an email can be routed; an anonymous profile that is already over
-- the threshold fires the moment it is identified.
local known = redis.call('HEXISTS', lead, 'email') == 1
if known and redis.call('HGET', lead, 'ready') ~= '1' then
  local trigger = nil
  if ev.h then
    trigger = 'hand_raiser'
  elseif after >= thr then
    trigger = 'threshold'
  end
  if trigger then
    local n = redis.call('HINCRBY', lead, 'crossing', 1)
    redis.call('HSET', lead, 'ready', '1', 'stage', 'mql', 'pending_event', eid,
      'pending_crossing', n, 'last_trigger', trigger, 'mql_ts', fmt(at))
    return snapshot('fired', {crossing = n, trigger = trigger, before = before, after = after})
  end
end
return cjson.encode({status = 'scored', before = before, after = after})
