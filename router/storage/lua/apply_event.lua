-- Apply scored events to one lead, atomically, in order.
--
-- De-duplicates by event id (Kafka delivers at least once), adds the points
-- with exact continuous exponential decay, keeps the reasons and the activity
-- timeline, and records a sales-ready crossing exactly once, before anything
-- acts on it.  Every key is in the lead's hash slot.  (Merging an anonymous
-- profile into a lead is done beforehand by the merge_* scripts.)
--
-- A lead that crossed before crosses again only under the re-engagement rules
-- (cfg.re, from scoring.ready.Reengage): from the stages listed, a
-- hand-raiser at any time, any other clause only when it crosses (it did not
-- hold just before) and the stage's seconds after the last crossing or outcome; never
-- within `cd` seconds of the last crossing unless an outcome came since; never
-- from mql.  The re-engagement is recorded with the crossing (re_* fields and a
-- 'reengaged' history entry), in this same atomic step.
--
-- KEYS[1..6]  lead hash, seen zset, reasons list, recent list, history list, ids set
--             (KEYS[6] may be absent: then it is not expired with the profile);
--             KEYS[7] (optional) the field history list (field provenance)
-- ARGV[1]     the lead's events, a JSON array of: e event_id, t ts, y type, s summary (compact
--             JSON text, router/storage/records.py), h hand_raiser, f fields {name: value}, m email,
--             i lead_id, u user_id, d UTC day, fv fields verified, fs fields' source,
--             g fit grade and gp fit points
--             (when this event changed what the grade is based on),
--             n the event's name (track events), w the web visit step
--             {k 'pv' page view | 'pp' page ping | 't' a touch without a
--             visit (form fill, email click), s channel, c campaign key}:
--             see web_step below,
--             fh {name: the field change's compact JSON head} (router/storage/records.py),
--             r hits [{rule, points, cap?, once?, x (hand-raiser), rh, rt: the compact
--             reason's JSON text before and after its points}]
--             or, with mode 'p', only i, e and pr: a new model probability;
--             or, with mode 'f', i, e (trigger id), trigger and reason (compact
--             JSON text): make the lead sales-ready because its account crossed
-- ARGV[2]     the batch's settings, JSON: hl half_life_s, now, sw
--             seen_window_s, rk reasons_kept, ck recent_kept, dc daily cap,
--             rc sales-ready clauses [{min_score?, grades?, min_p?,
--             hand_raiser?, label}], rb recycle_below, re {hs {stage: true},
--             ss {stage: seconds}, cd seconds} re-engagement rules, hk history kept,
--             at anonymous_ttl_s (0 or absent: anonymous profiles never expire),
--             fk field history kept,
--             iw identify window (seconds an anonymous hand-raise waits for the
--             person to be identified; absent or 0: never), vs the versions
--             scoring with (recorded on the lead, and on a crossing as mql_versions),
--             wg session gap s (1800), wp most seconds one ping interval counts (30),
--             wx most seconds one session counts (7200)
--
-- Batched: ARGV[1] is a JSON array of this lead's events, in order (one call per
-- lead per batch: a Zipf-skewed batch has far fewer leads than events); each is
-- applied exactly as if it came alone, and the reply is an array of JSON texts,
-- one per event.  The lead hash is read once per call (HGETALL) into a Lua
-- table, worked on there, and written back with one HSET/HDEL at the end; its
-- TTL is set after that write.  (One JSON argument per call keeps the client's
-- per-argument cost out of the hot path; cjson decodes it in C.)
local cfg = cjson.decode(ARGV[2])
local lead, seen, reasons, recent, hist = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ev, eid, ts  -- the event being applied (set by the loop at the end)
local h = cfg.hl
local now = cfg.now

-- Texts shown to people keep the 17 digits they always had (fmt17); numbers stored in
-- the hash and the compact entries are the shortest decimal text that reads back as
-- exactly the same double (fmt: '1790000019.972', not '1790000019.9719999').
local function fmt17(x) return string.format('%.17g', x) end
local function fmt(x)
  if x == math.floor(x) and math.abs(x) < 2^53 then return string.format('%d', x) end
  for _, f in ipairs({'%.15g', '%.16g'}) do
    local s = string.format(f, x)
    if tonumber(s) == x then return s end
  end
  return fmt17(x)
end
local num = fmt

-- The member the seen set holds for an event id (router/storage/records.py): a uuid's
-- 32 lowercase hex digits as byte 0xFF and their 16 bytes, any other id itself.  An id
-- is UTF-8 text, where 0xFF never occurs, so no two ids share a member.
local function seen_id(id)
  if #id == 32 and not string.find(id, '[^0-9a-f]') then
    return '\255' .. string.gsub(id, '..', function(x) return string.char(tonumber(x, 16)) end)
  end
  return id
end

-- The lead hash, cached for the call: H field -> string value; `dirty` fields are
-- written back and `gone` ones deleted by flush().  Values are kept as Redis would
-- store them (numbers as their decimal text).
local H, O, dirty, gone = {}, {}, {}, {}  -- O: the hash as read (a field set to the value it had is not written)
do
  local flat = redis.call('HGETALL', lead)
  for i = 1, #flat, 2 do H[flat[i]] = flat[i + 1]; O[flat[i]] = flat[i + 1] end
end
local function text(v)
  if type(v) == 'number' then
    if v == math.floor(v) and math.abs(v) < 2^53 then return string.format('%d', v) end
    return fmt(v)
  end
  return v
end
local function hget(k) return H[k] end
local function hexists(k) if H[k] ~= nil then return 1 end return 0 end
local function hset(...)
  local a = {...}
  for i = 1, #a, 2 do
    local k = a[i]
    H[k] = text(a[i + 1]); dirty[k] = true; gone[k] = nil
  end
end
local function hsetnx(k, v) if H[k] == nil then hset(k, v) end end
local function hdel(...)
  for _, k in ipairs({...}) do
    if H[k] ~= nil then H[k] = nil; dirty[k] = nil; gone[k] = true end
  end
end
local function hincrby(k, n)
  local v = (tonumber(H[k] or '0') or 0) + n
  hset(k, v)
  return v
end
local function hkeys()
  local out = {}
  for k in pairs(H) do out[#out + 1] = k end
  return out
end
local function hgetall()
  local out = {}
  for k, v in pairs(H) do out[k] = v end
  return out
end

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

-- The recycle schedule (router/worker/scheduler.py): while a lead is sales-ready
-- and unaccepted, `recycle_at` is the exact moment its stored score decays to
-- recycle_below, asof + h * log2(score / rb), recomputed here on every change.
-- It is armed once the score has been above the level (a lead that became
-- sales-ready below it -- a hand-raiser, the model, its account -- is never
-- recycled by decay: its SLA looks after it).  Returned as `ra` so the caller
-- indexes it in its due shard; a redelivered event returns it again.
local function rearm_recycle()
  if not cfg.rb then return nil end
  if cfg.rb <= 0 or hget('ready') ~= '1' or hget('stage') ~= 'mql' then
    hdel('recycle_at')
    return nil
  end
  local v = tonumber(hget('score') or '0')
  local a = tonumber(hget('asof') or '0')
  local t
  if a > 0 and v > cfg.rb then
    t = a + h * math.log(v / cfg.rb) / math.log(2)
  elseif hexists('recycle_at') == 1 then
    t = a  -- armed and already at or below the level (negative points): due now
  else
    return nil
  end
  hset('recycle_at', fmt(t))
  return t
end

local function snapshot(status, extra)
  local out = extra or {}
  out['status'] = status
  out['ra'] = rearm_recycle()
  out['lead'] = hgetall()
  out['reasons'] = redis.call('LRANGE', reasons, 0, 19)
  out['recent'] = redis.call('LRANGE', recent, 0, 9)
  return cjson.encode(out)
end

-- A crossing whose routing never finished (the worker died in between) is
-- resumed by the next event of the lead, redelivered or new.
local function resume()
  return snapshot('resume', {
    crossing = tonumber(hget('pending_crossing')),
    trigger = hget('last_trigger'),
  })
end

-- The sales-ready rule: any clause holds when all its conditions hold.
-- `only_hr`: only clauses that need a hand-raiser; `no_hr`: only those that do not.
local function ready_clause(score, grade, p, hr, only_hr, no_hr)
  for _, c in ipairs(cfg.rc) do
    local ok = true
    if only_hr and not c.hand_raiser then ok = false end
    if no_hr and c.hand_raiser then ok = false end
    if ok and c.min_score and not (score >= c.min_score) then ok = false end
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

-- The default re-engagement rules (a file without `reengage`): only nurture re-fires.
local re = cfg.re or {hs = {nurture = true}, ss = {nurture = 0}, cd = 0}
local held = {sal = true, sql = true, opportunity = true}

-- Record a crossing: a first one makes the lead mql; a re-engagement keeps a
-- lead a rep holds (sal, sql, opportunity) where it is and routes the others
-- again, remembering who had it and how it ended.
local function record_crossing(trigger, score)
  local prev = tonumber(hget('crossing') or '0')
  local n = hincrby('crossing', 1)
  local stage = hget('stage') or ''
  if prev > 0 then
    local owner = hget('owner') or ''
    local entry = {action = 'reengaged', from = stage, crossing = n, trigger = trigger, ts = now,
                   score = score, rep = owner,
                   last_outcome = hget('last_outcome') or '',
                   last_outcome_ts = tonumber(hget('last_outcome_ts') or '0'),
                   last_outcome_reason = hget('last_outcome_reason') or '',
                   last_crossing_ts = tonumber(hget('crossing_ts')
                                               or hget('mql_ts') or '0')}
    hset('re_crossing', n, 're_from', stage, 're_ts', fmt(now), 're_owner', owner,
      're_owner_name', hget('owner_name') or '',
      're_prev_crossing_ts', fmt(entry.last_crossing_ts))
    hincrby('reengagements', 1)
    redis.call('RPUSH', hist, cjson.encode(entry))
    redis.call('LTRIM', hist, -(cfg.hk or 500), -1)
    if not held[stage] then
      hset('stage', 'mql', 'mql_ts', fmt(now))
      hdel('owner', 'owner_name', 'assignment_id', 'accepted_by')
    end
  else
    hset('stage', 'mql', 'mql_ts', fmt(now))
  end
  hset('ready', '1', 'pending_event', eid, 'pending_crossing', n, 'last_trigger', trigger,
    'crossing_ts', fmt(now))
  return n
end

-- Whether a lead that crossed before may cross again now (see the header).
local function reengage_clause(stage, score, grade, p, hr, was)
  if stage == 'mql' or stage == '' then return nil end
  local last_cross = tonumber(hget('crossing_ts') or hget('mql_ts') or '0')
  local last_out = tonumber(hget('last_outcome_ts') or '0')
  if last_out <= last_cross and now - last_cross < (re.cd or 0) then return nil end
  if hr and re.hs[stage] then
    local c = ready_clause(score, grade, p, hr, true, false)
    if c then return c end
  end
  local after = re.ss[stage]
  if after and now - math.max(last_cross, last_out) >= after then
    if was and ready_clause(was.score, was.grade, was.p, false, false, true) then return nil end
    return ready_clause(score, grade, p, false, false, true)
  end
  return nil
end

-- Fire a crossing once: only a known lead (it has an email) without an
-- unfinished crossing; a first crossing when the lead is not yet sales-ready,
-- a re-engagement under cfg.re otherwise.  Recorded here, before anything acts
-- on it.  `was`: the lead just before this event {score, grade, p}.
local function maybe_fire(score, hr, extra, was)
  if hexists('email') == 0 or hexists('pending_event') == 1 then
    return nil
  end
  local grade = hget('grade')
  local p = tonumber(hget('p') or '')
  local c
  local first = hget('ready') ~= '1' and tonumber(hget('crossing') or '0') == 0
  if first then
    c = ready_clause(score, grade, p, hr, false, false)
  else
    c = reengage_clause(hget('stage') or '', score, grade, p, hr, was)
  end
  if not c then return nil end
  local trigger = c.label
  if c.hand_raiser then trigger = 'hand_raiser' end
  local n = record_crossing(trigger, score)
  if cfg.vs then hset('mql_versions', cfg.vs) end
  extra.crossing = n
  extra.trigger = trigger
  return snapshot('fired', extra)
end


-- Web analytics on the lead (scoring/touch.py, scoring/features.py), all times the
-- collector's receive time (ev.t), never the client's:
--   w:ss sessions; a page view opens one when the lead has none, after more than
--   cfg.wg seconds without a page view or ping, or when it brings a new UTM campaign
--   (the usual rule; midnight does not split a session).  A ping never opens one.
--   w:last the last page view or ping; w:camp the session's campaign; w:st its seconds;
--   w:time seconds on site: each page view or ping within a session adds the time since
--   the previous one, at most cfg.wp (a ping interval) and at most cfg.wx per session,
--   so a client sending pings fast or forever cannot add more than real time, capped.
--   w:ft / w:ft_ts first touch (the earliest), w:lt / w:lt_ts last non-direct touch
--   (a direct visit never replaces a known source).
local function touch(ch, t)
  if not ch or ch == '' then return end
  local ft_ts = tonumber(hget('w:ft_ts') or '')
  if not ft_ts or t < ft_ts then hset('w:ft', ch, 'w:ft_ts', fmt(t)) end
  local lt = hget('w:lt')
  local lt_ts = tonumber(hget('w:lt_ts') or '')
  if not lt or (ch ~= 'direct' and (lt == 'direct' or t >= lt_ts)) or (lt == 'direct' and t >= lt_ts) then
    hset('w:lt', ch, 'w:lt_ts', fmt(t))
  end
end

local function engaged(last, t)
  if t <= last then return end
  local st = tonumber(hget('w:st') or '0')
  local add = math.max(0, math.min(t - last, cfg.wp or 30, (cfg.wx or 7200) - st))
  if add > 0 then
    hset('w:st', fmt(st + add))
    hset('w:time', fmt(tonumber(hget('w:time') or '0') + add))
  end
end

local function web_step(w, t)
  if type(w) ~= 'table' then return end
  local last = tonumber(hget('w:last') or '')
  local gap = cfg.wg or 1800
  if w.k == 'pp' then
    if not last or t - last > gap then return end
    engaged(last, t)
  elseif w.k == 'pv' then
    local camp = w.c or ''
    if not last or t - last > gap or (camp ~= '' and camp ~= (hget('w:camp') or '')) then
      hincrby('w:ss', 1)
      hset('w:st', '0', 'w:camp', camp)
      touch(w.s, t)
    else
      engaged(last, t)
    end
  else
    touch(w.s, t)
    return
  end
  if not last or t > last then hset('w:last', fmt(t)) end
end

-- The lead's TTL after this call's writes: 'expire' (an anonymous profile, cfg.at
-- seconds) or 'persist' (a known lead); `expired`: its other keys got a TTL in this call.
local ttl_action, expired = nil, false

-- Apply the event `ev` to the lead: returns the JSON text of its result.
local function apply_one()
  local merged_into = hget('merged_into')
  if merged_into then
    return cjson.encode({status = 'moved', to = merged_into})
  end
  if hget('forgotten') == '1' then
    -- Erased on request (leadrouter forget): nothing about this person is kept again.
    return cjson.encode({status = 'forgotten'})
  end

  if ev.mode == 'f' then
    -- Forced by the lead's account crossing its threshold: sales-ready now,
    -- once; the same trigger id again resumes an unfinished crossing.
    if hget('pending_event') == eid then return resume() end
    if hexists('email') == 0 or hget('ready') == '1' then
      return cjson.encode({status = 'scored'})
    end
    redis.call('LPUSH', reasons, ev.reason)
    local n = record_crossing(ev.trigger, 0)
    return snapshot('fired', {crossing = n, trigger = ev.trigger})
  end

  if ev.mode == 'p' then
    -- A new model probability for the lead: store it and re-check the rule.
    local was_p = tonumber(hget('p') or '')
    hset('p', fmt(ev.pr))
    local v = tonumber(hget('score') or '0')
    local a = tonumber(hget('asof') or '0')
    local score = decayed(v, a, now)
    local fired = maybe_fire(score, false, {before = score, after = score},
      {score = score, grade = hget('grade'), p = was_p})
    if fired then return fired end
    return cjson.encode({status = 'scored', before = score, after = score, ra = rearm_recycle()})
  end

  -- Members written before the compact ids (the id itself) are looked up too while they
  -- can still be in the window.
  local sid = seen_id(eid)
  if redis.call('ZSCORE', seen, sid) or (sid ~= eid and redis.call('ZSCORE', seen, eid)) then
    if hexists('pending_event') == 1 then return resume() end
    return cjson.encode({status = 'duplicate', ra = tonumber(hget('recycle_at') or '')})
  end

  -- Scored with the whole second (rounded up: pruned no earlier than before): an integer
  -- is stored in a few bytes, a fractional time as 17 digits of text.
  redis.call('ZADD', seen, math.ceil(now), sid)
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - cfg.sw)

  if ev.y == 'page_ping' then
    -- Time on site only: no points, no activity, no timeline entry (see web_step).
    web_step(ev.w, ts)
    redis.call('EXPIRE', seen, math.max(1, math.ceil(cfg.sw)))
    return cjson.encode({status = 'ping'})
  end

  -- Caps: per rule per UTC day, a daily total, and once-per-lead rules.
  -- Mirrors scoring.caps.apply_caps.  Counters live in the lead hash for the
  -- current day only; an event from an earlier day is capped against a fresh
  -- count (its day's counters are gone).
  local day = ev.d or ''
  local capday = hget('capday') or ''
  local persist = true
  if day > capday then
    local flat = hkeys()
    for _, k in ipairs(flat) do
      if string.sub(k, 1, 2) == 'c:' then hdel(k) end
    end
    hset('capday', day, 'cd', '0')
  elseif day < capday then
    persist = false
  end
  local function count_up(u, g, cap)
    if not cap then return u + g end
    return math.max(u, math.min(cap, u + g))
  end
  local daily_used = 0
  if persist then daily_used = tonumber(hget('cd') or '0') end
  local pts = 0
  local granted_reasons = {}
  for _, hit in ipairs(ev.r or {}) do
    local p = hit.points
    local g = p
    if hit.once and hexists('o:' .. hit.rule) == 1 then
      g = 0
    elseif p > 0 then
      local used = 0
      if hit.cap and persist then used = tonumber(hget('c:' .. hit.rule) or '0') end
      if hit.cap then g = math.min(g, math.max(0, hit.cap - used)) end
      if cfg.dc then g = math.min(g, math.max(0, cfg.dc - daily_used)) end
      if hit.cap and persist then hset('c:' .. hit.rule, fmt(count_up(used, g, hit.cap))) end
      daily_used = count_up(daily_used, g, cfg.dc)
    end
    if hit.once and g ~= 0 then hset('o:' .. hit.rule, '1') end
    -- The compact reason (router/storage/records.py): hit.rh and hit.rt are its JSON text
    -- around the points; the cap note, when there is one, is stored as a flag or 'G of P'.
    local flag = ''
    if hit.x then flag = ',1' end
    if g ~= p then
      local hr = '0'
      if hit.x then hr = '1' end
      if hit.once and g == 0 then
        flag = ',' .. hr .. ',0'
      else
        flag = ',' .. hr .. ',"' .. fmt17(g) .. ' of ' .. fmt17(p) .. '"'
      end
    end
    table.insert(granted_reasons, hit.rh .. num(g) .. hit.rt .. flag .. ']')
    pts = pts + g
  end
  if persist then hset('cd', fmt(daily_used)) end

  local v = tonumber(hget('score') or '0')
  local a = tonumber(hget('asof') or '0')
  local at = ts
  if a > at then at = a end
  local before = decayed(v, a, at)
  local nv, na = add(v, a, pts, ts)
  local after = decayed(nv, na, at)
  local prev_seen = tonumber(hget('last_seen') or '')
  hset('score', fmt(nv), 'asof', fmt(na), 'lead_id', ev.i, 'last_seen', fmt(at))
  hsetnx('first_seen', fmt(ts))
  hincrby('events', 1)
  hincrby('n:' .. ev.y, 1)
  -- The last activity is the latest in event time: an older event applied late (redelivered, or
  -- re-applied after its profile was merged in the same batch) does not replace it.
  if not prev_seen or ts >= prev_seen then
    hset('last_type', ev.y)
    if ev.n and ev.n ~= '' then hset('last_name', ev.n) else hdel('last_name') end
  end
  web_step(ev.w, ts)
  -- Engagement and its recent change: the score right after the lead's last event (w:es) and
  -- as it stood before the first event of the lead's latest active UTC day (w:es0).
  if day ~= '' and day > (hget('w:esd') or '') then
    hset('w:esd', day, 'w:es0', fmt(before))
  end
  hset('w:es', fmt(after))

  local email = ev.m or ''
  if email ~= '' then hset('email', email) end
  if ev.u and ev.u ~= '' then hset('user_id', ev.u) end
  -- Field provenance (KEYS[7], the field history, when given): a field the lead has no value
  -- for is set; a different value replaces the current one only from a verified source (ev.fv:
  -- an SDK call with a write key, or a form from the lead's own browser); an unverified one
  -- (a stranger's form) is kept as a proposal beside it.  Either way the history keeps both
  -- values with their source and time; nothing is replaced silently.
  local fhist = KEYS[7]
  for k, fv in pairs(ev.f or {}) do
    local cur = hget('f:' .. k)
    if not fhist then
      hset('f:' .. k, fv)
    elseif cur ~= fv then
      local applied = (not cur) or ev.fv == true or k == 'consent'
      if applied then
        hset('f:' .. k, fv)
        hdel('fp:' .. k)
      else
        hset('fp:' .. k, fv)
      end
      -- The compact field change (router/storage/records.py): ev.fh[k] is its JSON text up
      -- to the flags (bit 0 verified, bit 1 applied), then the old value when there was one.
      local flags = 0
      if ev.fv == true then flags = flags + 1 end
      if applied then flags = flags + 2 end
      local entry = ev.fh[k] .. flags
      if cur then entry = entry .. ',' .. cjson.encode(cur) end
      redis.call('LPUSH', fhist, entry .. ']')
      redis.call('LTRIM', fhist, 0, (cfg.fk or 100) - 1)
    end
  end
  local stage = hget('stage')
  if not stage or (stage == 'anonymous' and email ~= '') then
    if hexists('email') == 1 then stage = 'known' else stage = 'anonymous' end
    hset('stage', stage)
  end

  if #granted_reasons > 0 then
    redis.call('LPUSH', reasons, unpack(granted_reasons))
    redis.call('LTRIM', reasons, 0, cfg.rk - 1)
  end
  local was = {score = before, grade = hget('grade'), p = tonumber(hget('p') or '')}
  if ev.g then hset('grade', ev.g, 'fit', fmt(ev.gp or 0)) end
  redis.call('LPUSH', recent, ev.s)
  redis.call('LTRIM', recent, 0, cfg.ck - 1)

  -- Expiry (keys.py): an anonymous profile (no email; not an email's L id) lives
  -- cfg.at seconds after its last event, refreshed here; a known lead never
  -- expires (a TTL left from before it was known is removed).  Counted event ids
  -- expire with their window.  O(1) per event.
  local ids = KEYS[6]
  if string.sub(ev.i or '', 1, 1) ~= 'L' and hexists('email') == 0
      and (cfg.at or 0) > 0 then
    local ttl = math.ceil(cfg.at)
    ttl_action, expired = 'expire', true  -- the hash itself after flush()
    redis.call('EXPIRE', reasons, ttl)
    redis.call('EXPIRE', recent, ttl)
    redis.call('EXPIRE', hist, ttl)
    if ids then redis.call('EXPIRE', ids, ttl) end
    if fhist then redis.call('EXPIRE', fhist, ttl) end
  else
    ttl_action = 'persist'
  end
  redis.call('EXPIRE', seen, math.max(1, math.ceil(cfg.sw)))

  -- A sales-ready lead that was never accepted and whose engagement has
  -- decayed below the recycle level goes back to nurture; the rule re-arms.
  -- (The scheduler's tick recycles it at the exact moment; an event that comes
  -- first does it here, with the same moment.)
  local recycled = false
  local armed = hget('recycle_at')
  if cfg.rb and armed and hget('ready') == '1' and hget('stage') == 'mql'
      and hexists('pending_event') == 0 and before < cfg.rb then
    hset('ready', '0', 'stage', 'nurture', 'recycled_ts', armed, 'last_outcome', 'recycled',
      'last_outcome_ts', armed, 'last_outcome_reason', 'engagement fell below ' .. fmt17(cfg.rb),
      'last_outcome_rep', hget('owner') or '',
      'last_outcome_rep_name', hget('owner_name') or '')
    hdel('recycle_at')
    hincrby('recycles', 1)
    recycled = true
  end

  if cfg.vs then hset('versions', cfg.vs) end

  -- A hand raised anonymously waits on the profile (hr_ts); once the person is
  -- known (merged into their lead) it counts if they identified within the
  -- window, once: the wait ends here either way.
  local hr = ev.h
  if hexists('email') == 0 then
    if hr then hset('hr_ts', fmt(ts), 'hr_event', eid) end
  else
    local waiting = tonumber(hget('hr_ts') or '')
    if waiting then
      hdel('hr_ts', 'hr_event')
      if cfg.iw and cfg.iw > 0 and math.abs(ts - waiting) <= cfg.iw then hr = true end
    end
  end

  local fired = maybe_fire(after, hr, {before = before, after = after, points = pts, recycled = recycled}, was)
  if fired then return fired end
  if hexists('pending_event') == 1 then return resume() end
  return cjson.encode({status = 'scored', before = before, after = after, points = pts, recycled = recycled,
                       ra = rearm_recycle()})
end

-- Write the cached hash back, then give it its TTL (a key must exist to get one).
local function flush()
  local del = {}
  for k in pairs(gone) do
    if O[k] ~= nil then del[#del + 1] = k end
  end
  if #del > 0 then redis.call('HDEL', lead, unpack(del)) end
  local set = {}
  for k in pairs(dirty) do
    if H[k] ~= O[k] then set[#set + 1] = k; set[#set + 1] = H[k] end
  end
  if #set > 0 then redis.call('HSET', lead, unpack(set)) end
  if ttl_action == 'expire' then
    redis.call('EXPIRE', lead, math.ceil(cfg.at))
  elseif ttl_action == 'persist' and (redis.call('PERSIST', lead) == 1 or expired) then
    redis.call('PERSIST', reasons)
    redis.call('PERSIST', recent)
    redis.call('PERSIST', hist)
    if KEYS[6] then redis.call('PERSIST', KEYS[6]) end
    if KEYS[7] then redis.call('PERSIST', KEYS[7]) end
  end
end

-- An error in one event (a failed write) still writes back what the events before
-- it did, then fails the call: the batch is retried, and those events are then
-- duplicates, as when each event was its own call.
local out = {}
for i, e in ipairs(cjson.decode(ARGV[1])) do
  ev, eid, ts = e, e.e, e.t
  local ok, res = pcall(apply_one)
  if not ok then
    flush()
    if type(res) == 'table' and res.err then res = res.err end
    return redis.error_reply('apply_event: event ' .. tostring(eid) .. ': ' .. tostring(res))
  end
  out[i] = res
end
flush()
return out
