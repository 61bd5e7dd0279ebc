-- Make a lead sales-ready because its account crossed its threshold
-- (lead's hash slot only).  Fires a crossing exactly like apply_event.lua
-- does, once; a repeat with the same trigger id resumes an unfinished one.
-- KEYS[1..4] lead hash, seen, reasons, recent
-- ARGV 1 trigger id  2 trigger  3 now  4 reason json
local lead, reasons, recent = KEYS[1], KEYS[3], KEYS[4]
local function snapshot(status, extra)
  local out = extra or {}
  out['status'] = status
  local flat = redis.call('HGETALL', lead)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  out['lead'] = fields
  out['reasons'] = redis.call('LRANGE', reasons, 0, 19)
  out['recent'] = redis.call('LRANGE', recent, 0, 9)
  return cjson.encode(out)
end
local into = redis.call('HGET', lead, 'merged_into')
if into then return cjson.encode({status = 'moved', to = into}) end
if redis.call('HGET', lead, 'pending_event') == ARGV[1] then
  return snapshot('resume', {crossing = tonumber(redis.call('HGET', lead, 'pending_crossing')),
    trigger = redis.call('HGET', lead, 'last_trigger')})
end
if redis.call('HEXISTS', lead, 'email') == 0 or redis.call('HGET', lead, 'ready') == '1' then
  return cjson.encode({status = 'scored'})
end
redis.call('LPUSH', reasons, ARGV[4])
local n = redis.call('HINCRBY', lead, 'crossing', 1)
redis.call('HSET', lead, 'ready', '1', 'stage', 'mql', 'pending_event', ARGV[1],
  'pending_crossing', n, 'last_trigger', ARGV[2], 'mql_ts', ARGV[3])
return snapshot('fired', {crossing = n, trigger = ARGV[2]})
