if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {0, ''}
end
local prev = redis.call('GET', KEYS[2]) or ''
if prev == ARGV[1] then
  return {-1, prev}
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], cjson.encode({action = 'rollback', version = tonumber(ARGV[1]), previous = prev,
                                           author = ARGV[2], ts = ARGV[3], note = ARGV[4]}))
return {1, prev}
