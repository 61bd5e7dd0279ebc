local n = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], n, ARGV[1])
local prev = redis.call('GET', KEYS[3])
redis.call('SET', KEYS[3], n)
redis.call('RPUSH', KEYS[4], cjson.encode({action = 'publish', version = n, previous = prev or '',
                                           author = ARGV[2], ts = ARGV[3], note = ARGV[4]}))
return n
