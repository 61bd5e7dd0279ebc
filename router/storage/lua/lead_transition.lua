-- One lifecycle transition of one lead by one rep, checked and applied atomically.
--
-- accept   mql -> sal                    (owner only)
-- reject   mql | sal -> nurture          (owner only; reason checked by the caller)
--          the score is multiplied by the factor (the stored score is kept as of
--          its own `asof`, like apply_event.lua, so the decayed value scales the
--          same), `ready` is cleared so a later crossing can fire again, the rep
--          joins the lead's rejected set and the lead loses its owner.
-- convert  sal -> sql | opportunity, sql -> opportunity   (owner only)
-- won      opportunity -> won            (owner only)
-- lost     sql | opportunity -> lost     (owner only)
-- won/lost leave `outcome_pending` set until the caller has written the
-- training row; repeating the same call then replays the row instead of failing.
-- reject/won/lost also set last_outcome (rejected | won | lost), last_outcome_ts,
-- last_outcome_reason, last_outcome_rep(_name) and last_outcome_from: what a
-- re-engagement is measured from and shows.
-- Every change appends one JSON entry to the lead's history list.
--
-- KEYS[1] lead hash  KEYS[2] history list  KEYS[3] rejected set
-- ARGV 1 action  2 rep_id  3 now  4 target stage ('' = the next one)  5 reason
--      6 reject score factor  7 history kept  8 rejected ttl s
local lead, hist, rejected = KEYS[1], KEYS[2], KEYS[3]
local action, rep, now = ARGV[1], ARGV[2], tonumber(ARGV[3])

local function fmt(x) return string.format('%.17g', x) end

local function snapshot()
  local flat = redis.call('HGETALL', lead)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  return fields
end

local function fail(code, extra)
  local out = extra or {}
  out['ok'] = false
  out['error'] = code
  out['stage'] = redis.call('HGET', lead, 'stage') or ''
  out['owner'] = redis.call('HGET', lead, 'owner') or ''
  out['owner_name'] = redis.call('HGET', lead, 'owner_name') or ''
  return cjson.encode(out)
end

if redis.call('EXISTS', lead) == 0 then return cjson.encode({ok = false, error = 'unknown_lead'}) end
local stage = redis.call('HGET', lead, 'stage') or ''
local owner = redis.call('HGET', lead, 'owner') or ''

-- A won/lost whose training row was never written: replay it (no new history).
if (action == 'won' or action == 'lost') and stage == action and owner == rep
    and redis.call('HGET', lead, 'outcome_pending') == '1' then
  return cjson.encode({ok = true, replay = true, from = redis.call('HGET', lead, 'outcome_from') or '',
                       to = stage, lead = snapshot()})
end

if owner == '' then return fail('no_owner') end
if owner ~= rep then return fail('not_owner') end

local allowed = {
  accept = {mql = 'sal'},
  reject = {mql = 'nurture', sal = 'nurture'},
  convert = {sal = 'sql', sql = 'opportunity'},
  won = {opportunity = 'won'},
  lost = {sql = 'lost', opportunity = 'lost'},
}
local rules = allowed[action]
if not rules then return fail('unknown_action') end
local target = rules[stage]
if action == 'convert' and ARGV[4] ~= '' then
  if ARGV[4] == 'opportunity' and (stage == 'sal' or stage == 'sql') then
    target = 'opportunity'
  elseif ARGV[4] == 'sql' and stage == 'sal' then
    target = 'sql'
  else
    target = nil
  end
end
if not target then return fail('bad_stage', {target = ARGV[4]}) end

local entry = {ts = now, action = action, rep = rep, from = stage, to = target,
               assignment_id = redis.call('HGET', lead, 'assignment_id') or '',
               team = redis.call('HGET', lead, 'team') or ''}
if ARGV[5] ~= '' then entry['reason'] = ARGV[5] end

redis.call('HSET', lead, 'stage', target, 'stage_ts', fmt(now), target .. '_ts', fmt(now))
if action == 'reject' or action == 'won' or action == 'lost' then
  -- The last outcome, whatever it was: the re-engagement rules count time from it
  -- (apply_event.lua) and a re-engagement alert shows it.
  local outcome = action
  if action == 'reject' then outcome = 'rejected' end
  redis.call('HSET', lead, 'last_outcome', outcome, 'last_outcome_ts', fmt(now), 'last_outcome_reason', ARGV[5],
    'last_outcome_rep', rep, 'last_outcome_rep_name', redis.call('HGET', lead, 'owner_name') or '',
    'last_outcome_from', stage)
end
local out = {ok = true, from = stage, to = target}
if action == 'accept' then
  redis.call('HSET', lead, 'accepted_by', rep)
elseif action == 'reject' then
  local factor = tonumber(ARGV[6])
  local score = tonumber(redis.call('HGET', lead, 'score') or '0')
  redis.call('HSET', lead, 'score', fmt(score * factor), 'last_owner', rep,
    'last_owner_name', redis.call('HGET', lead, 'owner_name') or '', 'reject_reason', ARGV[5])
  redis.call('HDEL', lead, 'ready', 'owner', 'owner_name', 'assignment_id', 'accepted_by')
  redis.call('HINCRBY', lead, 'rejections', 1)
  redis.call('SADD', rejected, rep)
  redis.call('EXPIRE', rejected, tonumber(ARGV[8]))
  entry['score_before'] = score
  entry['score_after'] = score * factor
  out['score_before'] = score
  out['score_after'] = score * factor
elseif action == 'won' or action == 'lost' then
  redis.call('HSET', lead, 'outcome', action, 'outcome_pending', '1', 'outcome_from', stage,
    'closed_ts', fmt(now))
  if ARGV[5] ~= '' then redis.call('HSET', lead, 'outcome_reason', ARGV[5]) end
end
redis.call('RPUSH', hist, cjson.encode(entry))
redis.call('LTRIM', hist, -tonumber(ARGV[7]), -1)
out['assignment_id'] = entry['assignment_id']
out['team'] = entry['team']
out['lead'] = snapshot()
return cjson.encode(out)
