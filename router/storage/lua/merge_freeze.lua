-- Step 1 of merging profile SOURCE into TARGET (source's hash slot only).
-- Marks the source as merged so later events addressed to it report "moved"
-- and go to the target, and returns the source's state for the target to
-- absorb.  Repeating it returns the same state until cleanup has run.
-- KEYS[1..4] source hash, seen, reasons, recent   ARGV[1] target lead id  ARGV[2] stub ttl
local into = redis.call('HGET', KEYS[1], 'merged_into')
if into and into ~= ARGV[1] then return cjson.encode({status = 'elsewhere', into = into}) end
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- Nothing to merge yet, but events already on their way to this profile
  -- (earlier in the same batch, or on another partition) must follow.
  redis.call('HSET', KEYS[1], 'merged_into', ARGV[1], 'cleaned', '1')
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  return cjson.encode({status = 'empty'})
end
if redis.call('HGET', KEYS[1], 'email') then
  -- A known person is never merged into someone else (unique identifier).
  return cjson.encode({status = 'known'})
end
if redis.call('HGET', KEYS[1], 'cleaned') == '1' then return cjson.encode({status = 'done'}) end
redis.call('HSET', KEYS[1], 'merged_into', ARGV[1])
local flat = redis.call('HGETALL', KEYS[1])
local h = {}
for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
-- Seen members can be bytes (router/storage/records.py): they travel hex-encoded, and
-- merge_absorb.lua decodes them.
local seen = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #seen, 2 do
  seen[i] = string.gsub(seen[i], '.', function(c) return string.format('%02x', string.byte(c)) end)
end
return cjson.encode({
  status = 'frozen', hash = h,
  seen = seen,
  reasons = redis.call('LRANGE', KEYS[3], 0, -1),
  recent = redis.call('LRANGE', KEYS[4], 0, -1),
})
