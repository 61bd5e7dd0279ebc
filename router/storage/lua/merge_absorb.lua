-- Step 2: the target absorbs a frozen source's state, exactly once
-- (target's hash slot only).  The source's score joins with exact decay, its
-- counted event ids join the target's so redelivered anonymous events stay
-- duplicates, and its reasons and timeline are kept.
-- KEYS[1..4] target hash, seen, reasons, recent
-- ARGV 1 source id  2 source score  3 source asof  4 half_life_s  5 seen window
--      6 reasons_kept  7 recent_kept  8 source events  9 source first_seen
--      10 now  11 seen json [id, score, id, score…]  12 reasons json  13 recent json
--      14 fields json {name: value}  15 counts json {type: n}
--      16 caps json {capday, cd, c: {rule: used}, o: [rule]}: the day's cap usage
--      17 the source's pending anonymous hand-raise: its ts ('' for none)  18 its event id
--      19 the target's TTL in seconds when it is anonymous (no email), refreshed
--         here; 0: the target is known (or nothing expires): its keys never expire
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
for i = 1, #seen, 2 do redis.call('ZADD', KEYS[2], 'NX', seen[i + 1], seen[i]) end
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
