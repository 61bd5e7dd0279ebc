-- A lease on one alert channel of one assignment, so only one sender
-- delivers it while copies of the alert record are in flight.
-- KEYS[1] the claim key   ARGV 1 op (take | renew | drop)  2 holder token  3 ttl ms
local op, holder = ARGV[1], ARGV[2]
if op == 'take' then
  if redis.call('SET', KEYS[1], holder, 'NX', 'PX', tonumber(ARGV[3])) then return 1 end
  return 0
end
if redis.call('GET', KEYS[1]) ~= holder then return 0 end
if op == 'renew' then return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3])) end
return redis.call('DEL', KEYS[1])
