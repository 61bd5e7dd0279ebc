-- Hand out the next turn of a team's round robin, once per assignment.
-- The same assignment id always gets the same rep, so a retried or
-- redelivered crossing never skips or repeats anyone's turn; two workers
-- never get the same turn because INCR is atomic.
-- KEYS[1] team round-robin counter, KEYS[2] this assignment's turn
-- ARGV[1] ttl seconds, ARGV[2..] rep ids in roster order
local got = redis.call('GET', KEYS[2])
if got then return got end
local n = #ARGV - 1
local i = redis.call('INCR', KEYS[1])
local rep = ARGV[((i - 1) % n) + 2]
redis.call('SET', KEYS[2], rep, 'EX', tonumber(ARGV[1]))
return rep
