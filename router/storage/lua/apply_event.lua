-- Apply one scored event to one lead, atomically.
--
-- De-duplicates by event id (Kafka delivers at least once), adds the points
-- with exact continuous exponential decay, keeps the reasons and the activity
-- timeline, and records a sales-ready crossing exactly once, before anything
-- acts on it.  Every key is in the lead's hash slot.  (Merging an anonymous
-- profile into a lead is done beforehand by the merge_* scripts.)
--
-- KEYS[1..4]  lead hash, seen zset, reasons list, recent list; KEYS[5] (optional) field history
-- ARGV[1]     the event, JSON: e event_id, t ts, y type, s summary (JSON
--             text), h hand_raiser, f fields {name: value}, m email,
--             i lead_id, u user_id, d UTC day, fv fields verified, fs fields' source,
--             g fit grade and gp fit points
--             (when this event changed what the grade is based on),
--             r hits [{rule, points, cap?, once?, reason {...}}]
--             or, with mode 'p', only i, e and pr: a new model probability;
--             or, with mode 'f', i, e (trigger id), trigger and reason (JSON
--             text): make the lead sales-ready because its account crossed
-- ARGV[2]     the batch's settings, JSON: hl half_life_s, now, sw
--             seen_window_s, rk reasons_kept, ck recent_kept, dc daily cap,
--             rc sales-ready clauses [{min_score?, grades?, min_p?,
--             hand_raiser?, label}], rb recycle_below, fk field history kept
-- (One JSON argument per event keeps the client's per-argument cost out of
-- the hot path; cjson decodes it in C.)
local ev = cjson.decode(ARGV[1])
local cfg = cjson.decode(ARGV[2])
local lead, seen, reasons, recent = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local eid = ev.e
local ts = ev.t
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

-- A crossing whose routing never finished (the worker died in between) is
-- resumed by the next event of the lead, redelivered or new.
local function resume()
  return snapshot('resume', {
    crossing = tonumber(redis.call('HGET', lead, 'pending_crossing')),
    trigger = redis.call('HGET', lead, 'last_trigger'),
  })
end

-- The sales-ready rule: any clause holds when all its conditions hold.
local function ready_clause(score, grade, p, hr)
  for _, c in ipairs(cfg.rc) do
    local ok = true
    if c.min_score and not (score >= c.min_score) then ok = false end
    if ok and c.grades then
      local found = false
      if grade and grade ~= '?' then
        for _, g in ipairs(c.grades) do if g == grade then found = true end end
      end
      ok = found
    end
    if ok and c.min_p and not (p and p == p and p >= c.min_p) then ok = false end
    if ok and c.hand_raiser and not hr then ok = false end
    if ok then return c end
  end
  return nil
end

-- Fire a crossing once: only a known lead (it has an email) that is not
-- already sales-ready; recorded here, before anything acts on it.
local function maybe_fire(score, hr, extra)
  if redis.call('HEXISTS', lead, 'email') == 0 or redis.call('HGET', lead, 'ready') == '1' then return nil end
  local grade = redis.call('HGET', lead, 'grade')
  local p = tonumber(redis.call('HGET', lead, 'p') or '')
  local c = ready_clause(score, grade, p, hr)
  if not c then return nil end
  local trigger = c.label
  if c.hand_raiser then trigger = 'hand_raiser' end
  local n = redis.call('HINCRBY', lead, 'crossing', 1)
  redis.call('HSET', lead, 'ready', '1', 'stage', 'mql', 'pending_event', eid,
    'pending_crossing', n, 'last_trigger', trigger, 'mql_ts', fmt(now))
  extra.crossing = n
  extra.trigger = trigger
  return snapshot('fired', extra)
end

local merged_into = redis.call('HGET', lead, 'merged_into')
if merged_into then
  return cjson.encode({status = 'moved', to = merged_into})
end
if redis.call('HGET', lead, 'forgotten') == '1' then
  -- Erased on request (leadrouter forget): nothing about this person is kept again.
  return cjson.encode({status = 'forgotten'})
end

if ev.mode == 'f' then
  -- Forced by the lead's account crossing its threshold: sales-ready now,
  -- once; the same trigger id again resumes an unfinished crossing.
  if redis.call('HGET', lead, 'pending_event') == eid then return resume() end
  if redis.call('HEXISTS', lead, 'email') == 0 or redis.call('HGET', lead, 'ready') == '1' then
    return cjson.encode({status = 'scored'})
  end
  redis.call('LPUSH', reasons, ev.reason)
  local n = redis.call('HINCRBY', lead, 'crossing', 1)
  redis.call('HSET', lead, 'ready', '1', 'stage', 'mql', 'pending_event', eid,
    'pending_crossing', n, 'last_trigger', ev.trigger, 'mql_ts', fmt(now))
  return snapshot('fired', {crossing = n, trigger = ev.trigger})
end

if ev.mode == 'p' then
  -- A new model probability for the lead: store it and re-check the rule.
  redis.call('HSET', lead, 'p', fmt(ev.pr))
  local v = tonumber(redis.call('HGET', lead, 'score') or '0')
  local a = tonumber(redis.call('HGET', lead, 'asof') or '0')
  local score = decayed(v, a, now)
  local fired = maybe_fire(score, false, {before = score, after = score})
  if fired then return fired end
  return cjson.encode({status = 'scored', before = score, after = score})
end

if redis.call('ZSCORE', seen, eid) then
  if redis.call('HEXISTS', lead, 'pending_event') == 1 then return resume() end
  return cjson.encode({status = 'duplicate'})
end

redis.call('ZADD', seen, now, eid)
redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - cfg.sw)

-- Caps: per rule per UTC day, a daily total, and once-per-lead rules.
-- Mirrors scoring.caps.apply_caps.  Counters live in the lead hash for the
-- current day only; an event from an earlier day is capped against a fresh
-- count (its day's counters are gone).
local day = ev.d or ''
local capday = redis.call('HGET', lead, 'capday') or ''
local persist = true
if day > capday then
  local flat = redis.call('HKEYS', lead)
  for _, k in ipairs(flat) do
    if string.sub(k, 1, 2) == 'c:' then redis.call('HDEL', lead, k) end
  end
  redis.call('HSET', lead, 'capday', day, 'cd', '0')
elseif day < capday then
  persist = false
end
local function count_up(u, g, cap)
  if not cap then return u + g end
  return math.max(u, math.min(cap, u + g))
end
local daily_used = 0
if persist then daily_used = tonumber(redis.call('HGET', lead, 'cd') or '0') end
local pts = 0
local granted_reasons = {}
for _, hit in ipairs(ev.r or {}) do
  local p = hit.points
  local g = p
  if hit.once and redis.call('HEXISTS', lead, 'o:' .. hit.rule) == 1 then
    g = 0
  elseif p > 0 then
    local used = 0
    if hit.cap and persist then used = tonumber(redis.call('HGET', lead, 'c:' .. hit.rule) or '0') end
    if hit.cap then g = math.min(g, math.max(0, hit.cap - used)) end
    if cfg.dc then g = math.min(g, math.max(0, cfg.dc - daily_used)) end
    if hit.cap and persist then redis.call('HSET', lead, 'c:' .. hit.rule, fmt(count_up(used, g, hit.cap))) end
    daily_used = count_up(daily_used, g, cfg.dc)
  end
  if hit.once and g ~= 0 then redis.call('HSET', lead, 'o:' .. hit.rule, '1') end
  local reason = hit.reason
  if g ~= p then
    reason.points = g
    if hit.once and g == 0 then
      reason.detail = reason.detail .. ' (once per lead: already counted)'
    else
      reason.detail = reason.detail .. ' (capped: ' .. fmt(g) .. ' of ' .. fmt(p) .. ')'
    end
  end
  table.insert(granted_reasons, cjson.encode(reason))
  pts = pts + g
end
if persist then redis.call('HSET', lead, 'cd', fmt(daily_used)) end

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
-- Field provenance (KEYS[5], the field history, when given): a field the lead has no value
-- for is set; a different value replaces the current one only from a verified source (ev.fv:
-- an SDK call with a write key, or a form from the lead's own browser); an unverified one
-- (a stranger's form) is kept as a proposal beside it.  Either way the history keeps both
-- values with their source and time; nothing is replaced silently.
local fhist = KEYS[5]
for k, fv in pairs(ev.f or {}) do
  local cur = redis.call('HGET', lead, 'f:' .. k)
  if not fhist then
    redis.call('HSET', lead, 'f:' .. k, fv)
  elseif cur ~= fv then
    local applied = (not cur) or ev.fv == true or k == 'consent'
    if applied then
      redis.call('HSET', lead, 'f:' .. k, fv)
      redis.call('HDEL', lead, 'fp:' .. k)
    else
      redis.call('HSET', lead, 'fp:' .. k, fv)
    end
    local entry = {field = k, new = fv, source = ev.fs or '', verified = ev.fv == true, applied = applied,
                   ts = ts, event_id = eid}
    if cur then entry.old = cur end
    redis.call('LPUSH', fhist, cjson.encode(entry))
    redis.call('LTRIM', fhist, 0, (cfg.fk or 100) - 1)
  end
end
local stage = redis.call('HGET', lead, 'stage')
if not stage or (stage == 'anonymous' and email ~= '') then
  if redis.call('HEXISTS', lead, 'email') == 1 then stage = 'known' else stage = 'anonymous' end
  redis.call('HSET', lead, 'stage', stage)
end

if #granted_reasons > 0 then
  redis.call('LPUSH', reasons, unpack(granted_reasons))
  redis.call('LTRIM', reasons, 0, cfg.rk - 1)
end
if ev.g then redis.call('HSET', lead, 'grade', ev.g, 'fit', fmt(ev.gp or 0)) end
redis.call('LPUSH', recent, ev.s)
redis.call('LTRIM', recent, 0, cfg.ck - 1)

-- A sales-ready lead that was never accepted and whose engagement has
-- decayed below the recycle level goes back to nurture; the rule re-arms.
local recycled = false
if cfg.rb and redis.call('HGET', lead, 'ready') == '1' and redis.call('HGET', lead, 'stage') == 'mql'
    and redis.call('HEXISTS', lead, 'pending_event') == 0 and before < cfg.rb then
  redis.call('HSET', lead, 'ready', '0', 'stage', 'nurture', 'recycled_ts', fmt(at))
  redis.call('HINCRBY', lead, 'recycles', 1)
  recycled = true
end

local fired = maybe_fire(after, ev.h, {before = before, after = after, points = pts, recycled = recycled})
if fired then return fired end
if redis.call('HEXISTS', lead, 'pending_event') == 1 then return resume() end
return cjson.encode({status = 'scored', before = before, after = after, points = pts, recycled = recycled})
