-- Pick the rep for one assignment inside a team, count it against the rep's
-- capacity and schedule its SLA steps: all in one atomic step on the team's
-- hash slot, so workers racing on the same team never share or skip a turn.
--
-- Idempotent per assignment id: the first call records the pick and every
-- later call returns it unchanged (status 'existing'), like assign_turn.lua.
--
-- Eligibility by clock (out of office, day off, outside hours) is decided by
-- the caller from its own clock and passed in; capacity is counted here.
-- A rep is skipped when excluded (rejected the lead, already held it),
-- unavailable, or at capacity_day / capacity_30d.  A rep out of office is
-- never picked, not even when nobody else is left.
--
-- When nobody is eligible, ARGV[14] decides (the team's after-hours policy):
--   'earliest'  the lead goes, queued (reason 'no_rep_available'), to the
--               non-excluded reps whose SLA base (next working moment) is the
--               earliest, picked among them by the strategy;
--   'none'      nothing is recorded (status 'none', reason 'no_rep_available'):
--               the caller applies the team's policy (on-call rep, fallback team).
-- When every non-excluded rep is out of office the answer is status 'none'
-- with reason 'team_out_of_office'.  When every rep is excluded it goes to the
-- earliest of all reps not out of office (reason 'all_reps_excluded') unless
-- ARGV[11] is '0', in which case nothing is recorded and rep is false.
--
-- KEYS[1] team rr counter   KEYS[2] team swrr hash   KEYS[3] this assignment's pick
-- KEYS[4] sla remind zset    KEYS[5] sla deadline zset (reassign or escalate)
-- KEYS[6 + 2(i-1)], KEYS[7 + 2(i-1)]  rep i's assigned zset and open zset
-- ARGV 1 strategy  2 assignment_id  3 lead_id  4 now  5 pick ttl s  6 capacity window s
--      7 open window s  8 remind after s ('' none)  9 deadline after s ('' none)  10 sla member
--      11 allow excluded ('1'/'0')  12 deadline step name  13 n reps  14 fallback (earliest | none)
--      15 outcome label recorded with the pick ('' : 'next_available' when queued, else 'available')
--      then 8 per rep: rep_id, weight, cap_day (0 none), cap_30d (0 none), day_start,
--      unavailable reason ('' available), excluded ('1'/'0'), sla base ts
local strategy = ARGV[1]
local now = tonumber(ARGV[4])
local got = redis.call('GET', KEYS[3])
if got then
  local prev = cjson.decode(got)
  prev['status'] = 'existing'
  return cjson.encode(prev)
end

local n = tonumber(ARGV[13])
local reps = {}
local base = 16
local fallback = ARGV[14]
for i = 1, n do
  local o = base + (i - 1) * 8
  reps[i] = {
    id = ARGV[o], weight = tonumber(ARGV[o + 1]), cap_day = tonumber(ARGV[o + 2]),
    cap_30d = tonumber(ARGV[o + 3]), day_start = tonumber(ARGV[o + 4]), why = ARGV[o + 5],
    excluded = ARGV[o + 6] == '1', sla_base = tonumber(ARGV[o + 7]),
    assigned = KEYS[6 + (i - 1) * 2], open = KEYS[7 + (i - 1) * 2],
  }
end

local skipped = {}
local eligible, candidates, everyone = {}, {}, {}
local ooo = 'out_of_office'
local window = tonumber(ARGV[6])
local open_window = tonumber(ARGV[7])
for i = 1, n do
  local r = reps[i]
  redis.call('ZREMRANGEBYSCORE', r.assigned, '-inf', '(' .. (now - window))
  redis.call('ZREMRANGEBYSCORE', r.open, '-inf', '(' .. (now - open_window))
  r.n_day = redis.call('ZCOUNT', r.assigned, r.day_start, '+inf')
  r.n_30d = redis.call('ZCARD', r.assigned)
  r.n_open = redis.call('ZCARD', r.open)
  if r.why ~= ooo then everyone[i] = true end
  if r.excluded then
    skipped[r.id] = 'excluded'
  else
    if r.why ~= ooo then candidates[i] = true end
    if r.why ~= '' then
      skipped[r.id] = r.why
    elseif r.cap_day > 0 and r.n_day >= r.cap_day then
      skipped[r.id] = 'capacity_day'
    elseif r.cap_30d > 0 and r.n_30d >= r.cap_30d then
      skipped[r.id] = 'capacity_30d'
    else
      eligible[i] = true
    end
  end
end

-- Only the reps whose next working moment is the earliest of ``set``.
local function earliest(set)
  local first = nil
  for i = 1, n do
    if set[i] and (first == nil or reps[i].sla_base < first) then first = reps[i].sla_base end
  end
  local out = {}
  for i = 1, n do
    if set[i] and reps[i].sla_base == first then out[i] = true end
  end
  return out
end

local function none(why)
  return cjson.encode({status = 'none', rep = false, queued = true, reason = why, skipped = skipped})
end

local pool, queued, reason = eligible, false, ''
if next(pool) == nil then
  queued = true
  local some_not_excluded = false
  for i = 1, n do
    if not reps[i].excluded then some_not_excluded = true end
  end
  if next(candidates) ~= nil then
    if fallback ~= 'earliest' then return none('no_rep_available') end
    pool, reason = earliest(candidates), 'no_rep_available'
  elseif some_not_excluded then
    return none('team_out_of_office')  -- everyone who did not reject it is out of office
  elseif ARGV[11] ~= '1' then
    return none('all_reps_excluded')
  elseif next(everyone) == nil then
    return none('team_out_of_office')
  else
    pool, reason = earliest(everyone), 'all_reps_excluded'
  end
end

local chosen = nil
if strategy == 'weighted' then
  -- Smooth weighted round robin (nginx): every pooled rep gains its weight, the
  -- highest current weight wins (roster order breaks ties) and pays back the total.
  local total, best, best_cw = 0, nil, nil
  local cws = {}
  for i = 1, n do
    if pool[i] then
      local cw = tonumber(redis.call('HGET', KEYS[2], reps[i].id) or '0') + reps[i].weight
      cws[i] = cw
      total = total + reps[i].weight
      if best == nil or cw > best_cw then best, best_cw = i, cw end
    end
  end
  cws[best] = cws[best] - total
  for i = 1, n do
    if cws[i] then redis.call('HSET', KEYS[2], reps[i].id, cws[i]) end
  end
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]) * 1000)
  chosen = best
else
  -- round_robin and load_balanced walk the roster from the team's counter, so
  -- ties (and, for round_robin, every turn) rotate fairly; the counter moves
  -- past the chosen rep.
  local c = tonumber(redis.call('GET', KEYS[1]) or '0')
  local steps = nil
  for k = 0, n - 1 do
    local i = ((c + k) % n) + 1
    if pool[i] then
      if strategy == 'load_balanced' then
        -- fewest open leads relative to capacity_30d: a/b < c/d  <=>  a*d < c*b
        local cap = reps[i].cap_30d
        if cap <= 0 then cap = 1 end
        if chosen == nil then
          chosen, steps = i, k + 1
        else
          local bcap = reps[chosen].cap_30d
          if bcap <= 0 then bcap = 1 end
          if reps[i].n_open * bcap < reps[chosen].n_open * cap then chosen, steps = i, k + 1 end
        end
      else
        chosen, steps = i, k + 1
        break
      end
    end
  end
  redis.call('SET', KEYS[1], c + steps)
end

local r = reps[chosen]
local aid, lead = ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[5])
redis.call('ZADD', r.assigned, now, aid)
redis.call('PEXPIRE', r.assigned, (window + 86400) * 1000)
redis.call('ZADD', r.open, now, lead)
redis.call('PEXPIRE', r.open, (open_window + 86400) * 1000)

local out = {status = 'new', rep = r.id, queued = queued, reason = reason, strategy = strategy,
             assignment_id = aid, ts = now, sla_base = r.sla_base,
             load = {day = r.n_day + 1, d30 = r.n_30d + 1, open = r.n_open + 1}, skipped = skipped}
if ARGV[15] ~= '' then
  out['outcome'] = ARGV[15]
elseif queued and reason == 'no_rep_available' then
  out['outcome'] = 'next_available'
else
  out['outcome'] = 'available'
end
if ARGV[8] ~= '' then
  local at = r.sla_base + tonumber(ARGV[8])
  redis.call('ZADD', KEYS[4], at, ARGV[10])
  out['remind_at'] = at
end
if ARGV[9] ~= '' then
  local at = r.sla_base + tonumber(ARGV[9])
  redis.call('ZADD', KEYS[5], at, ARGV[10])
  out['deadline_at'] = at
  out['deadline_step'] = ARGV[12]
end
local encoded = cjson.encode(out)
redis.call('SET', KEYS[3], encoded, 'EX', ttl)
return encoded
