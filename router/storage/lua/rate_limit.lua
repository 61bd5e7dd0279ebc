-- Fixed-window rate-limit counters (router/ingest/ratelimit.py): add requests, return each window's count.
-- KEYS the counters of one or more (scope, client address or visitor id, window), all with one hash tag
-- ({R:<n>}, router/storage/keys.py); ARGV[1] their lifetime in ms (the rest of the window plus a margin),
-- set when a window's first requests create its counter; ARGV[1 + i] how many requests to add to KEYS[i]
-- (1 for a form counted as it arrives; a collector's batch for pixels and SDK calls).
local out = {}
for i, key in ipairs(KEYS) do
  local add = ARGV[i + 1]
  local n = redis.call('INCRBY', key, add)
  if n == tonumber(add) then redis.call('PEXPIRE', key, ARGV[1]) end
  out[i] = n
end
return out
