-- One fixed-window rate-limit counter (router/ingest/ratelimit.py): count this request, return the count.
-- KEYS[1] the counter of one (scope, client address or visitor id, window); ARGV[1] its lifetime in ms
-- (the rest of the window plus a margin), set by the first request of the window.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
