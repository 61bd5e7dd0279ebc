-- One alert action link (router/admin/links.py) against the lead it names, atomically.
--
-- A link acts only while the assignment it was sent for is still the lead's current
-- one, held by the link's rep and not yet accepted (stage mql), and only once: 'use'
-- records the link's one-time id (jti) with SET NX in the same step as those checks.
--
-- op 'check'    what would happen (the GET page): no write
-- op 'use'      the checks, then record the jti as used; only 'ok' records it
-- op 'release'  forget a recorded jti whose action failed before changing anything
--
-- Returns JSON {state, stage, owner_name, used}: state is
--   ok          the link may act (use: it is now recorded)
--   used        the jti was used already (used: the JSON recorded then)
--   gone        no lead, or it was forgotten
--   reassigned  the lead's current assignment is another one, or another rep holds it
--   handled     the assignment stands but is no longer waiting (accepted, rejected, closed)
--
-- KEYS[1] lead hash  KEYS[2] the jti's used-marker (same {L:<id>} slot)
-- ARGV 1 op  2 assignment_id  3 rep_id  4 now  5 marker ttl s  6 action (use)
local lead, marker = KEYS[1], KEYS[2]
local op, aid, rep = ARGV[1], ARGV[2], ARGV[3]

if op == 'release' then
  redis.call('DEL', marker)
  return cjson.encode({state = 'ok'})
end

local function answer(state, extra)
  local out = extra or {}
  out['state'] = state
  out['stage'] = redis.call('HGET', lead, 'stage') or ''
  out['owner_name'] = redis.call('HGET', lead, 'owner_name') or ''
  return cjson.encode(out)
end

local used = redis.call('GET', marker)
if used then return answer('used', {used = used}) end
if redis.call('EXISTS', lead) == 0 or redis.call('HGET', lead, 'forgotten') == '1' then
  return cjson.encode({state = 'gone', stage = '', owner_name = ''})
end
local current = redis.call('HGET', lead, 'assignment_id') or ''
local owner = redis.call('HGET', lead, 'owner') or ''
if current == aid and owner == rep then
  if (redis.call('HGET', lead, 'stage') or '') ~= 'mql' then return answer('handled') end
elseif current == '' and (owner == '' or owner == rep) then
  return answer('handled')  -- rejected or recycled: no assignment stands
else
  return answer('reassigned')
end
if op == 'use' then
  local ttl = math.max(1, math.floor(tonumber(ARGV[5])))
  local ok = redis.call('SET', marker, cjson.encode({ts = tonumber(ARGV[4]), action = ARGV[6]}), 'NX', 'EX', ttl)
  if not ok then return answer('used', {used = redis.call('GET', marker) or ''}) end
end
return answer('ok')
