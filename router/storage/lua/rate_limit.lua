-- One fixed-window rate-limit counter (router/ingest/ratelimit.py): add requests, return the window's count.
-- KEYS[1] the counter of one (scope, client address or visitor id, window); ARGV[1] its lifetime in ms
-- (the rest of the window plus a margin), set when the window's first requests create it; ARGV[2] how
-- many requests to add (1 for a form counted as it arrives; a collector's batch for pixels and SDK calls).
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
if n == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
