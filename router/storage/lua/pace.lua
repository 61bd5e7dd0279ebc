-- The token bucket of bucket_step(), atomically in Redis: one call per message.
-- KEYS[1] the channel's bucket (hash: tokens, ts)
-- ARGV[1] rate (tokens/s), ARGV[2] burst, ARGV[3] 'take' | 'hold' | 'debit', ARGV[4] hold seconds,
-- ARGV[5] now in epoch seconds ('' = the Redis server's clock, shared by every worker),
-- ARGV[6] ttl ms.  Returns the seconds the caller waits for its slot (text: Lua
-- numbers would be truncated to integers on the way out).
if redis.replicate_commands then pcall(redis.replicate_commands) end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
local lag = 0
if not tokens or not ts then
  tokens = burst
  ts = now
elseif now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
else
  lag = ts - now
end
local wait = 0
if ARGV[3] == 'hold' then
  local floor = 1 - tonumber(ARGV[4]) * rate
  if tokens > floor then tokens = floor end
elseif ARGV[3] == 'debit' then
  -- a priority message went first: later callers queue one slot further back
  tokens = tokens - 1
else
  tokens = tokens - 1
  wait = lag
  if tokens < 0 then wait = lag - tokens / rate end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens), 'ts', string.format('%.6f', ts))
local idle = 0
if tokens < burst then idle = (burst - tokens) / rate end
redis.call('PEXPIRE', KEYS[1], math.ceil((idle + lag) * 1000) + tonumber(ARGV[6]))
return string.format('%.6f', wait)
