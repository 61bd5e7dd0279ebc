-- Step 2: the target absorbs a frozen source's state, exactly once
-- (target's hash slot only).  The source's score joins with exact decay, its
-- counted event ids join the target's so redelivered anonymous events stay
-- duplicates, and its reasons and timeline are kept.
-- KEYS[1..4] target hash, seen, reasons, recent
-- ARGV 1 source id  2 source score  3 source asof  4 half_life_s  5 seen window
--      6 reasons_kept  7 recent_kept  8 source events  9 source first_seen
--      10 now  11 seen json [member hex, score, member hex, score…] (as merge_freeze.lua returns them)  12 reasons json  13 recent json
--      14 fields json {name: value}  15 counts json {type: n}
--      16 caps json {capday, cd, c: {rule: used}, o: [rule]}: the day's cap usage
--      17 the source's pending anonymous hand-raise: its ts ('' for none)  18 its event id
--      19 the target's TTL in seconds when it is anonymous (no email), refreshed
--         here; 0: the target is known (or nothing expires): its keys never expire
--      20 web json {ss, time, st, last, camp, ft, ft_ts, lt, lt_ts, es, es0, esd}: the source's
--         visits (apply_event.lua's w:* fields) -- sessions and seconds on site add up (two
--         browsers' sessions are two sessions), the session in progress is the later one's,
--         the first touch is the earlier one, the last non-direct touch the later one
if redis.call('HGET', KEYS[1], 'forgotten') == '1' then return 0 end
local marker = 'absorbed:' .. ARGV[1]
if redis.call('HEXISTS', KEYS[1], marker) == 1 then return 0 end
local h = tonumber(ARGV[4])
local function fmt(x) return string.format('%.17g', x) end
local av, aa = tonumber(ARGV[2]), tonumber(ARGV[3])
if aa > 0 then
  local v = tonumber(redis.call('HGET', KEYS[1], 'score') or '0')
  local a = tonumber(redis.call('HGET', KEYS[1], 'asof') or '0')
  if a <= 0 then v, a = av, aa
  elseif aa >= a then v, a = v * math.pow(2, -(aa - a) / h) + av, aa
  else v = v + av * math.pow(2, -(a - aa) / h) end
  redis.call('HSET', KEYS[1], 'score', fmt(v), 'asof', fmt(a))
end
local seen = cjson.decode(ARGV[11])
for i = 1, #seen, 2 do
  -- hex-encoded by merge_freeze.lua (members can be bytes: router/storage/records.py)
  local member = string.gsub(seen[i], '..', function(x) return string.char(tonumber(x, 16)) end)
  redis.call('ZADD', KEYS[2], 'NX', seen[i + 1], member)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[10]) - tonumber(ARGV[5]))
local reasons = cjson.decode(ARGV[12])
if #reasons > 0 then redis.call('RPUSH', KEYS[3], unpack(reasons)) end
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
local recent = cjson.decode(ARGV[13])
if #recent > 0 then redis.call('RPUSH', KEYS[4], unpack(recent)) end
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
for k, v in pairs(cjson.decode(ARGV[14])) do redis.call('HSETNX', KEYS[1], 'f:' .. k, v) end
for k, n in pairs(cjson.decode(ARGV[15])) do redis.call('HINCRBY', KEYS[1], 'n:' .. k, tonumber(n)) end
redis.call('HINCRBY', KEYS[1], 'events', tonumber(ARGV[8]))
-- The same person's cap usage today is one budget: add the source's counters
-- when both count the same day (a later day's counters on either side win).
local caps = cjson.decode(ARGV[16])
for _, rule in ipairs(caps.o or {}) do redis.call('HSET', KEYS[1], 'o:' .. rule, '1') end
if caps.capday and caps.capday ~= '' then
  local mine = redis.call('HGET', KEYS[1], 'capday') or ''
  if caps.capday > mine then
    local flat = redis.call('HKEYS', KEYS[1])
    for _, k in ipairs(flat) do
      if string.sub(k, 1, 2) == 'c:' then redis.call('HDEL', KEYS[1], k) end
    end
    redis.call('HSET', KEYS[1], 'capday', caps.capday, 'cd', '0')
    mine = caps.capday
  end
  if caps.capday == mine then
    redis.call('HSET', KEYS[1], 'cd', fmt(tonumber(redis.call('HGET', KEYS[1], 'cd') or '0') + (caps.cd or 0)))
    for rule, used in pairs(caps.c or {}) do
      redis.call('HSET', KEYS[1], 'c:' .. rule,
        fmt(tonumber(redis.call('HGET', KEYS[1], 'c:' .. rule) or '0') + used))
    end
  end
end
if ARGV[9] ~= '' then
  local first = tonumber(redis.call('HGET', KEYS[1], 'first_seen') or '0')
  if first == 0 or tonumber(ARGV[9]) < first then redis.call('HSET', KEYS[1], 'first_seen', ARGV[9]) end
end
-- A hand raised before the person was known waits on the lead they turn out to be;
-- the next event applied to it decides (apply_event.lua: within the identify window, once).
if ARGV[17] and ARGV[17] ~= '' then
  local mine = tonumber(redis.call('HGET', KEYS[1], 'hr_ts') or '')
  if not mine or tonumber(ARGV[17]) > mine then
    redis.call('HSET', KEYS[1], 'hr_ts', ARGV[17], 'hr_event', ARGV[18])
  end
end
local web = cjson.decode(ARGV[20] or '{}')
if type(web) == 'table' and next(web) ~= nil then
  local t = KEYS[1]
  if tonumber(web.ss or 0) > 0 then redis.call('HINCRBY', t, 'w:ss', tonumber(web.ss)) end
  if tonumber(web.time or 0) > 0 then
    redis.call('HSET', t, 'w:time', fmt(tonumber(redis.call('HGET', t, 'w:time') or '0') + tonumber(web.time)))
  end
  local mine = tonumber(redis.call('HGET', t, 'w:last') or '')
  local theirs = tonumber(web.last or '')
  if theirs and (not mine or theirs > mine) then
    redis.call('HSET', t, 'w:last', fmt(theirs), 'w:camp', web.camp or '', 'w:st', web.st or '0')
  end
  local ft_ts = tonumber(web.ft_ts or '')
  local my_ft = tonumber(redis.call('HGET', t, 'w:ft_ts') or '')
  if web.ft and ft_ts and (not my_ft or ft_ts < my_ft) then
    redis.call('HSET', t, 'w:ft', web.ft, 'w:ft_ts', fmt(ft_ts))
  end
  local lt_ts = tonumber(web.lt_ts or '')
  if web.lt and lt_ts then
    local lt = redis.call('HGET', t, 'w:lt')
    local my_lt = tonumber(redis.call('HGET', t, 'w:lt_ts') or '')
    if not lt or (web.lt ~= 'direct' and (lt == 'direct' or lt_ts >= my_lt))
        or (web.lt == 'direct' and lt == 'direct' and lt_ts >= my_lt) then
      redis.call('HSET', t, 'w:lt', web.lt, 'w:lt_ts', fmt(lt_ts))
    end
  end
  -- engagement's recent change: the later active day's starting point (both sides' on the same day)
  local esd = web.esd or ''
  local my_esd = redis.call('HGET', t, 'w:esd') or ''
  if esd ~= '' and esd > my_esd then
    redis.call('HSET', t, 'w:esd', esd, 'w:es0', web.es0 or '0')
  elseif esd ~= '' and esd == my_esd then
    redis.call('HSET', t, 'w:es0', fmt(tonumber(redis.call('HGET', t, 'w:es0') or '0') + tonumber(web.es0 or '0')))
  end
  if aa > 0 then redis.call('HSET', t, 'w:es', redis.call('HGET', t, 'score')) end
end
redis.call('HSET', KEYS[1], marker, ARGV[10])
redis.call('HINCRBY', KEYS[1], 'merges', 1)
-- Expiry (keys.py): what a known lead absorbs is kept for good; an anonymous
-- target (an alias into a user's profile) lives its TTL from now.
local ttl = tonumber(ARGV[19] or '0')
if ttl > 0 and redis.call('HEXISTS', KEYS[1], 'email') == 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[3])
  redis.call('PERSIST', KEYS[4])
end
redis.call('EXPIRE', KEYS[2], math.max(1, math.ceil(tonumber(ARGV[5]))))
return 1
