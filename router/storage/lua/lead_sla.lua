-- The lead-side half of distribution and of every SLA step, atomic on the lead's slot.
--
-- op 'assigned'  record that the assignment went to a rep (history + holders), once
--                per assignment id; runs before the alert is published.
-- op 'remind' | 'escalate' | 'expired'   record the step once per assignment id, if
--                the assignment is still the lead's current one and still unaccepted (mql);
--                'expired': the deadline passed with nobody left to reassign to and no escalation.
-- op 'held'      record, once per assignment id, that nobody could take the lead
--                (every rep out of office); the crossing stays open and is retried.
-- op 'check'     is the assignment still current and unaccepted? returns the reps
--                who held this crossing and those who rejected the lead.
-- op 'reassign'  compare-and-set: move the lead from the assignment to a new one
--                (new owner), only if it is still current and unaccepted.
-- op 'manual'    ops reassign by hand (extra: by, reason): compare-and-set from the current
--                assignment while mql or sal; the lead is mql again for the new rep.
-- Returns JSON {status = ok | dup | stale | retry | gone, ...}; 'retry' means the
-- assignment is picked but its routing has not committed yet (try again later).
--
-- KEYS[1] lead hash  KEYS[2] history list  KEYS[3] holders set (this crossing)  KEYS[4] rejected set
-- ARGV 1 op  2 assignment_id  3 now  4 history kept  5 holders ttl s  6 crossing of the assignment
--      7 rep_id (assigned: the rep; reassign: the new rep)  8 rep name  9 new assignment_id
--      10 extra JSON merged into the history entry  11 team
local lead, hist, holders, rejected = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, aid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])

local function fmt(x) return string.format('%.17g', x) end

local function push(entry)
  local extra = cjson.decode(ARGV[10])
  for k, v in pairs(extra) do
    if entry[k] == nil then entry[k] = v end
  end
  entry['ts'] = now
  redis.call('RPUSH', hist, cjson.encode(entry))
  redis.call('LTRIM', hist, -tonumber(ARGV[4]), -1)
end

if redis.call('EXISTS', lead) == 0 then return cjson.encode({status = 'gone'}) end

if op == 'assigned' then
  if redis.call('HGET', lead, 'hist_assigned') == aid then return cjson.encode({status = 'dup'}) end
  redis.call('HSET', lead, 'hist_assigned', aid)
  redis.call('SADD', holders, ARGV[7])
  redis.call('EXPIRE', holders, tonumber(ARGV[5]))
  push({action = 'assigned', rep = ARGV[7], rep_name = ARGV[8], assignment_id = aid, team = ARGV[11]})
  return cjson.encode({status = 'ok'})
end

if op == 'held' then
  if redis.call('HGET', lead, 'hist_held') == aid then return cjson.encode({status = 'dup'}) end
  redis.call('HSET', lead, 'hist_held', aid)
  push({action = 'held', assignment_id = aid, team = ARGV[11]})
  return cjson.encode({status = 'ok'})
end

if op == 'manual' then
  -- Ops move the lead by hand (router/worker/reassign.py): only from its current assignment,
  -- while it is open (mql, or sal: back to mql, the new rep accepts); the SLA restarts.
  local cur = redis.call('HGET', lead, 'assignment_id') or ''
  local st = redis.call('HGET', lead, 'stage') or ''
  if cur ~= aid then return cjson.encode({status = 'stale', current = cur, stage = st}) end
  if st ~= 'mql' and st ~= 'sal' then return cjson.encode({status = 'stale', current = cur, stage = st}) end
  if redis.call('HEXISTS', lead, 'pending_event') == 1 then return cjson.encode({status = 'retry'}) end
  local prev = redis.call('HGET', lead, 'owner') or ''
  local extra = cjson.decode(ARGV[10])
  redis.call('HSET', lead, 'owner', ARGV[7], 'owner_name', ARGV[8], 'assignment_id', ARGV[9], 'team', ARGV[11],
    'stage', 'mql', 'stage_ts', fmt(now), 'assigned_ts', fmt(now), 'hist_assigned', ARGV[9],
    'reassigned_by', extra['by'] or '', 'reassign_reason', extra['reason'] or '', 'reassigned_ts', fmt(now))
  redis.call('HDEL', lead, 'accepted_by')
  redis.call('HINCRBY', lead, 'manual_reassigns', 1)
  redis.call('SADD', holders, ARGV[7])
  redis.call('EXPIRE', holders, tonumber(ARGV[5]))
  push({action = 'reassign', manual = true, from_rep = prev, rep = ARGV[7], rep_name = ARGV[8],
        assignment_id = ARGV[9], previous_assignment_id = aid, team = ARGV[11], from = st, to = 'mql'})
  return cjson.encode({status = 'ok', owner = prev, stage = st})
end

local current = redis.call('HGET', lead, 'assignment_id')
local stage = redis.call('HGET', lead, 'stage')
if current ~= aid then
  if redis.call('HGET', lead, 'pending_crossing') == ARGV[6] and redis.call('HGET', lead, 'hist_assigned') == aid then
    return cjson.encode({status = 'retry'})
  end
  return cjson.encode({status = 'stale', current = current or '', stage = stage or ''})
end
if stage ~= 'mql' then return cjson.encode({status = 'stale', current = current, stage = stage or ''}) end
local owner = redis.call('HGET', lead, 'owner') or ''
local owner_name = redis.call('HGET', lead, 'owner_name') or ''

if op == 'remind' or op == 'escalate' or op == 'expired' then
  local marker = 'sla_' .. op
  if redis.call('HGET', lead, marker) == aid then return cjson.encode({status = 'dup'}) end
  redis.call('HSET', lead, marker, aid)
  if op == 'escalate' then redis.call('HSET', lead, 'escalated', '1', 'escalated_ts', fmt(now)) end
  push({action = 'sla_' .. op, rep = owner, rep_name = owner_name, assignment_id = aid,
        team = redis.call('HGET', lead, 'team') or ARGV[11]})
  return cjson.encode({status = 'ok', owner = owner})
end

if op == 'check' then
  return cjson.encode({status = 'ok', owner = owner, holders = redis.call('SMEMBERS', holders),
                       rejected = redis.call('SMEMBERS', rejected)})
end

if op == 'reassign' then
  local new_aid = ARGV[9]
  redis.call('HSET', lead, 'owner', ARGV[7], 'owner_name', ARGV[8], 'assignment_id', new_aid,
    'assigned_ts', fmt(now), 'hist_assigned', new_aid)
  redis.call('HINCRBY', lead, 'sla_reassigns', 1)
  redis.call('SADD', holders, ARGV[7])
  redis.call('EXPIRE', holders, tonumber(ARGV[5]))
  push({action = 'sla_reassign', from_rep = owner, rep = ARGV[7], rep_name = ARGV[8], assignment_id = new_aid,
        previous_assignment_id = aid, team = redis.call('HGET', lead, 'team') or ARGV[11]})
  return cjson.encode({status = 'ok', owner = owner})
end
return cjson.encode({status = 'error', error = 'unknown op ' .. op})
