-- Roll events up to their account, atomically (account's hash slot only).
--
-- Account intent = the decayed sum of its members' points (exact, same
-- half-life as leads) + breadth: a bonus per distinct person active within
-- the window and per distinct buying-committee role among them.  Crossing
-- the account threshold fires once (re-armed when intent falls below half of
-- it) and names the most engaged known member, ranked by forward-decayed
-- points so the ranking is exact at any moment.
--
-- KEYS[1..6] account hash, seen, members (lead -> last active ts),
--            engaged (known lead -> forward-decayed points), roles (lead -> role),
--            role_ts (role -> when anyone holding it was last active)
-- ARGV[1] the account's events, in order, a JSON array of: e event_id, t ts,
--         p points, i lead_id, r role, n name, d domain, k known (true when
--         the lead has an email); one call per account per batch, each event
--         applied as if it came alone
-- ARGV[2] JSON: now, sw seen_window_s, hl half_life_s, w window_s,
--         th threshold, pp per_person, pr per_role, ep epoch, mh member
--         horizon s (event time; 0 or absent: members are never trimmed)
-- Returns an array of JSON texts, one per event.
local acct, seen, members, engaged, roles, role_ts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local cfg = cjson.decode(ARGV[2])
local now = cfg.now
local h, window, thr = cfg.hl, cfg.w, cfg.th
local function fmt(x) return string.format('%.17g', x) end
-- The member the seen set holds for an event id, as apply_event.lua's seen_id
-- (router/storage/records.py): a uuid's hex as 0xFF and its 16 bytes, other ids themselves.
local function seen_id(id)
  if #id == 32 and not string.find(id, '[^0-9a-f]') then
    return '\255' .. string.gsub(id, '..', function(x) return string.char(tonumber(x, 16)) end)
  end
  return id
end

local function apply_one(ev)
  local eid, ts, pts = ev.e, ev.t, ev.p
  local lead, role = ev.i, ev.r or ''

  -- Members written before the compact ids (the id itself) are looked up too.
  local sid = seen_id(eid)
  if redis.call('ZSCORE', seen, sid) or (sid ~= eid and redis.call('ZSCORE', seen, eid)) then
    if redis.call('HGET', acct, 'pending_event') == eid then
      return cjson.encode({status = 'resume', top = redis.call('HGET', acct, 'pending_lead'),
        crossing = tonumber(redis.call('HGET', acct, 'crossing'))})
    end
    return cjson.encode({status = 'duplicate'})
  end
  redis.call('ZADD', seen, math.ceil(now), sid)
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - cfg.sw)
  redis.call('EXPIRE', seen, math.max(1, math.ceil(cfg.sw)))
  if ev.n and ev.n ~= '' then redis.call('HSETNX', acct, 'name', ev.n) end
  if ev.d and ev.d ~= '' then redis.call('HSETNX', acct, 'domain', ev.d) end

  local v = tonumber(redis.call('HGET', acct, 'score') or '0')
  local a = tonumber(redis.call('HGET', acct, 'asof') or '0')
  local at = ts
  if a > at then at = a end
  if a <= 0 then v, a = pts, ts
  elseif ts >= a then v, a = v * math.pow(2, -(ts - a) / h) + pts, ts
  else v = v + pts * math.pow(2, -(a - ts) / h) end
  redis.call('HSET', acct, 'score', fmt(v), 'asof', fmt(a))
  local engagement = v
  if at > a then engagement = v * math.pow(2, -(at - a) / h) end

  redis.call('ZADD', members, 'GT', ts, lead)
  -- The member's role: from this event, else the one remembered for them.
  -- Breadth is counted in O(roles), not O(members): each role keeps the time
  -- anyone holding it was last active.
  local r = role
  if r ~= '' then redis.call('HSET', roles, lead, r) else r = redis.call('HGET', roles, lead) or '' end
  if r ~= '' and ts > tonumber(redis.call('HGET', role_ts, r) or '0') then
    redis.call('HSET', role_ts, r, fmt(ts))
  end
  if ev.k and pts ~= 0 then
    redis.call('ZINCRBY', engaged, pts * math.pow(2, (ts - cfg.ep) / h), lead)
  end

  -- Expiry (keys.py): members inactive longer than the horizon (never shorter
  -- than the window, so no active member is lost) leave the members set, and an
  -- anonymous one its remembered role; at most 100 per event, so the work stays
  -- O(1) per event and a backlog is worked off by the events that follow.
  local mh = cfg.mh or 0
  if mh > 0 then
    local gone = redis.call('ZRANGEBYSCORE', members, '-inf', '(' .. fmt(at - math.max(mh, window)), 'LIMIT', 0, 100)
    if #gone > 0 then
      redis.call('ZREM', members, unpack(gone))
      for _, m in ipairs(gone) do
        if string.sub(m, 1, 1) ~= 'L' then redis.call('HDEL', roles, m) end
      end
    end
  end

  local people = redis.call('ZCOUNT', members, at - window, '+inf')
  local nroles = 0
  local rt = redis.call('HGETALL', role_ts)
  for i = 2, #rt, 2 do
    if tonumber(rt[i]) >= at - window then nroles = nroles + 1 end
  end
  local intent = engagement + cfg.pp * people + cfg.pr * nroles
  redis.call('HSET', acct, 'intent', fmt(intent), 'active_people', people, 'active_roles', nroles,
    'last_active', fmt(at))

  local ready = redis.call('HGET', acct, 'ready') == '1'
  if ready and intent < thr / 2 then
    redis.call('HSET', acct, 'ready', '0')
    ready = false
  end
  if not ready and intent >= thr then
    local top = redis.call('ZREVRANGE', engaged, 0, 0)[1]
    if top then
      local n = redis.call('HINCRBY', acct, 'crossing', 1)
      redis.call('HSET', acct, 'ready', '1', 'pending_event', eid, 'pending_lead', top)
      return cjson.encode({status = 'fired', top = top, crossing = n, intent = intent,
        people = people, roles = nroles})
    end
  end
  return cjson.encode({status = 'scored', intent = intent, people = people, roles = nroles})
end

local out = {}
for i, ev in ipairs(cjson.decode(ARGV[1])) do out[i] = apply_one(ev) end
return out
