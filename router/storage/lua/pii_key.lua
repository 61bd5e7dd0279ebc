-- A person's data key: read it, or create it, unless the person was forgotten.
-- KEYS[1] the data key, KEYS[2] the tombstone (one slot: {P:<subject>})
-- ARGV[1] a freshly wrapped key to store when there is none ('' : read only)
-- Returns {'gone'} | {'none'} | {'ok', wrapped key}
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'gone'}
end
local dk = redis.call('GET', KEYS[1])
if dk then
  return {'ok', dk}
end
if ARGV[1] == '' then
  return {'none'}
end
redis.call('SET', KEYS[1], ARGV[1])
return {'ok', ARGV[1]}
