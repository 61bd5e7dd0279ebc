"""Every Redis key the service uses, in one place.

Keys of one lead share the hash tag ``{L:<id>}``, keys of one team ``{T:<team>}``
and keys of one assignment ``{A:<id>}``, so each Lua script touches one hash
slot (Redis Cluster) except the one-off merge of an anonymous profile.
Lead ids are hex digests, so user input never lands inside a hash tag.
"""

from __future__ import annotations

import hashlib

PREFIX = "lr"

# How long an event id is remembered for de-duplication (router.settings.DEDUPE_WINDOW_DAYS).
# Kafka redelivers after a crash or rebalance within minutes, and a topic keeps a
# message 7 days by default (retention.ms): a redelivery, or a replay of everything
# the topic still holds, within a week of the first count is still a duplicate.
# The ``seen`` sets are pruned to this window on each event and expire this long
# after a lead's last event.
SEEN_WINDOW_S = 7 * 24 * 3600

# --- expiry (issue 11.5) ---------------------------------------------------------------------------
# Known leads (``L`` ids, minted from an email) and their history never expire.
# Anonymous profiles (``A`` from a visitor id, ``U`` from a user id: no email) do,
# ANONYMOUS_TTL_S after their last event, refreshed atomically by the Lua call that
# applies each event: the lead hash, reasons, recent and ids (``seen`` has its own,
# shorter window), with the profile's identity links (visitor/user id -> lead, refreshed
# by the batch that used them), its account tie (``lead_account``) and its entry in
# its account's members/roles (trimmed by account_event.lua).  A link to a known lead
# lives KNOWN_LINK_TTL_S after it was last used: as long as the collector's cookie.
# Defaults; the worker takes LEADROUTER_ANONYMOUS_TTL_DAYS and _KNOWN_LINK_TTL_DAYS.
ANONYMOUS_TTL_S = 90 * 24 * 3600
KNOWN_LINK_TTL_S = 395 * 24 * 3600
REASONS_KEPT = 100
RECENT_KEPT = 20
SENT_TTL_S = 30 * 24 * 3600


def normalise_email(email: str) -> str:
    return email.strip().lower()


def lead_id_for_email(email: str) -> str:
    digest = hashlib.sha256(normalise_email(email).encode()).hexdigest()[:24]
    return f"L{digest}"


def is_email_lead(lead_id: str) -> bool:
    """Whether a lead id was minted from an email (``L``): a known person, kept for good."""
    return lead_id.startswith("L")


def lead_id_for_visitor(visitor_id: str) -> str:
    digest = hashlib.sha256(visitor_id.encode()).hexdigest()[:24]
    return f"A{digest}"


def lead_id_for_user(user_id: str) -> str:
    digest = hashlib.sha256(user_id.encode()).hexdigest()[:24]
    return f"U{digest}"


def lead(lead_id: str) -> str:
    """Hash: email, score, asof, ready, crossing, stage, f:<field>, owner…"""
    return f"{PREFIX}:{{L:{lead_id}}}:lead"


def seen(lead_id: str) -> str:
    """Sorted set event id -> whole second counted: the events already counted (members compact:
    router/storage/records.py)."""
    return f"{PREFIX}:{{L:{lead_id}}}:seen"


def reasons(lead_id: str) -> str:
    """List of JSON reasons, newest first: why the score is what it is (compact arrays, or objects
    written before them: router/storage/records.py)."""
    return f"{PREFIX}:{{L:{lead_id}}}:reasons"


def recent(lead_id: str) -> str:
    """List of JSON event summaries, newest first: the activity timeline (compact arrays, or objects
    written before them: router/storage/records.py)."""
    return f"{PREFIX}:{{L:{lead_id}}}:recent"


def lead_ids(lead_id: str) -> str:
    """Set of "v:<visitor id>" / "u:<user id>": the identifiers mapped to a lead (for erasure)."""
    return f"{PREFIX}:{{L:{lead_id}}}:ids"


def lead_keys(lead_id: str) -> list[str]:
    return [lead(lead_id), seen(lead_id), reasons(lead_id), recent(lead_id)]


def apply_keys(lead_id: str) -> list[str]:
    """The keys apply_event.lua takes: :func:`lead_keys`, the history, :func:`lead_ids` and the
    :func:`field_history` (KEYS[7]), all in the lead's slot."""
    return [*lead_keys(lead_id), history(lead_id), lead_ids(lead_id), field_history(lead_id)]


def visitor(visitor_id: str) -> str:
    """String: the lead a browser's visitor id belongs to once identified."""
    digest = hashlib.sha256(visitor_id.encode()).hexdigest()[:24]
    return f"{PREFIX}:id:v:{digest}"


def user(user_id: str) -> str:
    """String: the lead a customer's own user id belongs to."""
    digest = hashlib.sha256(user_id.encode()).hexdigest()[:24]
    return f"{PREFIX}:id:u:{digest}"


IDENTITY_LOG = f"{PREFIX}:identity:log"
"""Stream: every merge and every refused merge (conflict), for audit."""
IDENTITY_LOG_MAXLEN = 1_000_000
MERGED_TTL_S = 90 * 24 * 3600


def account_keys(key_id: str) -> list[str]:
    """Hash (name, domain, score, asof, intent, ready…), seen event ids,
    members (lead -> last active ts), engaged (known lead -> forward-decayed
    points), roles (lead -> buying-committee role) and role_ts (role -> last
    active ts of anyone holding it): one hash slot."""
    base = f"{PREFIX}:{{C:{key_id}}}"
    return [f"{base}:acct", f"{base}:seen", f"{base}:members", f"{base}:engaged", f"{base}:roles",
            f"{base}:role_ts"]


def lead_account(lead_id: str) -> str:
    """String: the account key id a lead belongs to (an anonymous profile's expires with it)."""
    return f"{PREFIX}:la:{lead_id}"


# Reference time for forward-decayed rankings (2024-01-01): keeps exponents small.
DECAY_EPOCH = 1_704_067_200.0


def message_seen(event_id: str) -> str:
    """String with a TTL: an SDK message id (as our event id) already accepted."""
    return f"{PREFIX}:msgid:{event_id}"


def team_rr(team: str) -> str:
    """Counter: the team's round-robin position, shared by every worker."""
    return f"{PREFIX}:{{T:{team}}}:rr"


def alert_sent(assignment_id: str) -> str:
    """Hash channel -> ts: channels an assignment's alert already went out on."""
    return f"{PREFIX}:{{A:{assignment_id}}}:sent"


def alert_claim(assignment_id: str, channel: str) -> str:
    """String with a short TTL: the sender delivering this channel right now (a lease, renewed while sending)."""
    return f"{PREFIX}:{{A:{assignment_id}}}:claim:{channel}"


def rep_leads(rep_id: str) -> str:
    """Sorted set lead_id -> assigned ts: a rep's open leads."""
    return f"{PREFIX}:rep:{rep_id}:leads"


# --- Published routing rules (router/storage/rules_store.py: rules publish / rollback / history) ----------
# Every key shares the hash tag {rules}, so publish and rollback are each one Lua
# call on one hash slot.  Workers poll rules_active() with one GET per check.


def rules_active() -> str:
    """String: the number of the published rules version in force; absent means the rules file is used."""
    return f"{PREFIX}:{{rules}}:active"


def rules_seq() -> str:
    """Counter: the last version number handed out (versions are 1, 2, 3, ...)."""
    return f"{PREFIX}:{{rules}}:seq"


def rules_versions() -> str:
    """Hash version number -> JSON: content, source, author, ts, note, hashes, test cases."""
    return f"{PREFIX}:{{rules}}:versions"


def rules_history() -> str:
    """List of JSON entries, oldest first: each publish and rollback, with author, time and note."""
    return f"{PREFIX}:{{rules}}:history"


# --- Published scoring and ICP files (router/storage/config_store.py: scoring|icp publish / rollback / history) --
# The same four keys per kind, each kind on its own hash tag; config_*("rules") are the routing keys above.
CONFIG_KINDS = ("scoring", "icp")


def config_active(kind: str) -> str:
    """String: the number of the published version of ``kind`` in force; absent means the file is used."""
    return f"{PREFIX}:{{{kind}}}:active"


def config_seq(kind: str) -> str:
    """Counter: the last version number of ``kind`` handed out."""
    return f"{PREFIX}:{{{kind}}}:seq"


def config_versions(kind: str) -> str:
    """Hash version number -> JSON document (content, source, author, ts, note, hashes, test cases)."""
    return f"{PREFIX}:{{{kind}}}:versions"


def config_history(kind: str) -> str:
    """List of JSON entries, oldest first: each publish and rollback of ``kind``."""
    return f"{PREFIX}:{{{kind}}}:history"


# --- distribution, lead lifecycle and SLA (issue 5 items 4-6) --------------------------------------
# Added keys only; everything above is unchanged.  Team keys share ``{T:<team>}`` so one
# distribution call (pick + capacity count + SLA schedule) is one Lua script on one slot;
# lead keys share ``{L:<id>}`` so one lifecycle transition is one Lua script on one slot.

PICK_TTL_S = 30 * 24 * 3600  # a pick is remembered this long, so a retried crossing gets the same rep
CAPACITY_WINDOW_S = 30 * 24 * 3600  # capacity_30d counts assignments in this rolling window
OPEN_WINDOW_S = 45 * 24 * 3600  # an open lead older than this stops counting toward a rep's load
HISTORY_KEPT = 500
HOLDERS_TTL_S = 90 * 24 * 3600
REJECTED_TTL_S = 365 * 24 * 3600  # a rep who rejected a lead is not sent it again for a year
SLA_LEASE_S = 60  # a claimed SLA item comes due again after this if its ticker died mid-step
SLA_STEPS = ("remind", "reassign", "escalate")
HELD_STEP = "held"  # team_sla(team, HELD_STEP): leads nobody could take (all out of office), retried by the ticker
NOTIFY_STEP = "notify"  # team_sla(team, NOTIFY_STEP): a rep to tell that a lead was reassigned to them by hand
HELD_RETRY_S = 3600.0  # a held lead is looked at again at least this often (admin overrides end any time)
OUTCOMES = f"{PREFIX}:outcomes"
OUTCOMES_MAXLEN = 1_000_000


def team_pick(team: str, assignment_id: str) -> str:
    """String (JSON): the rep one assignment got, queued flag and reason, so a retry gets the same rep."""
    return f"{PREFIX}:{{T:{team}}}:pick:{assignment_id}"


def team_swrr(team: str) -> str:
    """Hash rep_id -> current weight: smooth weighted round-robin state, shared by every worker."""
    return f"{PREFIX}:{{T:{team}}}:swrr"


def team_assigned(team: str, rep_id: str) -> str:
    """Sorted set assignment_id -> ts: what a rep was given, for capacity_day and capacity_30d."""
    return f"{PREFIX}:{{T:{team}}}:assigned:{rep_id}"


def team_open(team: str, rep_id: str) -> str:
    """Sorted set lead_id -> assigned ts: a rep's open leads in this team (load_balanced)."""
    return f"{PREFIX}:{{T:{team}}}:open:{rep_id}"


def team_sla(team: str, step: str) -> str:
    """Sorted set "<lead_id> <assignment_id>" -> due ts: SLA steps (remind, reassign, escalate) due."""
    return f"{PREFIX}:{{T:{team}}}:sla:{step}"


def sla_member(lead_id: str, assignment_id: str) -> str:
    return f"{lead_id} {assignment_id}"


def history(lead_id: str) -> str:
    """List of JSON entries, oldest first: every assignment, transition and SLA step of a lead."""
    return f"{PREFIX}:{{L:{lead_id}}}:history"


def rejected(lead_id: str) -> str:
    """Set of rep ids who rejected the lead: never picked for it again."""
    return f"{PREFIX}:{{L:{lead_id}}}:rejected"


def holders(lead_id: str, crossing: int) -> str:
    """Set of rep ids who held one crossing of a lead: SLA reassignment skips them."""
    return f"{PREFIX}:{{L:{lead_id}}}:holders:{crossing}"


def action_link_used(lead_id: str, jti: str) -> str:
    """String (JSON ts, action), kept until the link's expiry: an alert action link's one-time id, once it acted."""
    return f"{PREFIX}:{{L:{lead_id}}}:link:{jti}"


# --- admin HTTP API (router/admin/app.py, router/admin/auth.py; issue 6 item 4) -----------------------
# Added keys only.  Tokens are stored by the sha256 of the token, never the token itself.

ADMIN_TOKENS = f"{PREFIX}:admin:tokens"
"""Set of token hashes (sha256 hex): every admin API token, for `leadrouter admin token list`."""


def admin_token(token_hash: str) -> str:
    """Hash role, rep_id, name, created: one admin API bearer token, keyed by the sha256 hex of the token."""
    return f"{PREFIX}:admin:token:{token_hash}"


def rep_availability(rep_id: str) -> str:
    """Hash out_of_office, until, note, set_by, set_at: an out-of-office override set through the admin API.

    Only ids of reps in the routing config in force are used here (the API checks first).
    """
    return f"{PREFIX}:rep:{rep_id}:availability"


# --- Alert delivery: Slack pacing and rep digests (issue 6; router/alerts/pacing.py, router/alerts/digest.py) ------
# Added keys only.  A pacing bucket is one key (one Lua call per message); a rep's digest
# keys share ``{D:<rep_id>}`` so a claim or a finish is one Lua call on one slot; the
# schedule of due digests is one sorted set of its own.

PACE_TTL_S = 60  # kept this long past the moment the bucket would be full again (= absent)


def alert_pace(channel_key: str) -> str:
    """Hash tokens, ts: the token bucket pacing Slack messages to one channel, shared by every worker.

    ``channel_key`` is already a digest (webhook URLs are secrets) or a Slack user id.
    """
    digest = hashlib.sha256(channel_key.encode()).hexdigest()[:24]
    return f"{PREFIX}:pace:{{{digest}}}"


def digest_queue(rep_id: str) -> str:
    """Hash assignment_id -> alert JSON: alerts waiting for the rep's next digest."""
    return f"{PREFIX}:{{D:{rep_id}}}:queue"


def digest_batch(rep_id: str) -> str:
    """Hash assignment_id -> alert JSON: the digest being sent (kept until it is out, so a crash resumes it)."""
    return f"{PREFIX}:{{D:{rep_id}}}:batch"


def digest_meta(rep_id: str) -> str:
    """Hash seq, since, lease, owner: the rep's digest number and who is sending it until when."""
    return f"{PREFIX}:{{D:{rep_id}}}:meta"


def digest_keys(rep_id: str) -> list[str]:
    return [digest_queue(rep_id), digest_batch(rep_id), digest_meta(rep_id)]


DIGEST_DUE = f"{PREFIX}:{{digest}}:due"
"""Sorted set rep_id -> ts: when each rep's digest is due."""


# --- Abuse: collector rate limits, the review queue, field provenance (issue 16.2, 16.3) --------------


# Rate-limit counters are spread over this many hash tags (``{R:<n>}``), so a collector's flush adds
# every counter of one tag in one Lua call: at most this many calls however many keys it carries.
RATE_LIMIT_TAGS = 64


def rate_limit(scope: str, identifier: str, window: int) -> str:
    """Counter with a TTL: requests of one client address or visitor id in one fixed window.

    ``scope`` is ``<endpoint class>:<ip|visitor>``; the identifier is hashed, so client input never
    shapes a key, and the hash picks one of :data:`RATE_LIMIT_TAGS` hash tags (see
    :func:`rate_limit_tag`).  router/storage/lua/rate_limit.lua adds to the counters of one tag at once.
    """
    digest = hashlib.sha256(identifier.encode()).hexdigest()[:20]
    return f"{PREFIX}:rl:{{R:{int(digest[:8], 16) % RATE_LIMIT_TAGS}}}:{scope}:{digest}:{window}"


def rate_limit_tag(key: str) -> str:
    """The hash tag of a :func:`rate_limit` key: keys with the same one go in one Lua call."""
    return key[:key.index("}") + 1]


REVIEW_QUEUE = f"{PREFIX}:review:queue"
"""Sorted set lead_id -> ts held: hand-raisers held for review instead of going to a rep (one per lead)."""
REVIEW_RELEASED = f"{PREFIX}:review:released"
"""Sorted set lead_id -> ts released: leads ops released, routed normally by the next worker tick."""
REVIEW_KEPT = 10_000  # the queue keeps this many leads, oldest dropped from the index (the lead keeps its state)


def field_history(lead_id: str) -> str:
    """List of JSON entries, newest first: every change to a lead field (and every proposal an
    unverified source made), with the old and new value, source and time (compact arrays, or objects
    written before them: router/storage/records.py)."""
    return f"{PREFIX}:{{L:{lead_id}}}:fields"


FIELD_HISTORY_KEPT = 100


# --- Due times: the scheduler (router/worker/scheduler.py; issue 11.3) --------------------------------------
# Added keys only.  Moments that must be acted on without waiting for a lead's next
# event (recycling a lead whose engagement decayed) sit in sorted sets member -> due
# time, sharded by the item's id into DUE_SHARDS sets ``{due:<n>}``: each claim is one
# Lua call on one slot, and the shards spread over a Redis Cluster.  A tick claims
# what is due in every shard (one pipelined round trip), so its cost is the number
# of due items plus DUE_SHARDS, whatever the number of leads.  (SLA steps live in
# their team's slot instead, scheduled atomically with the pick: team_sla above.)

DUE_SHARDS = 16  # fixed: items already indexed stay in the shard their id hashes to
DUE_LEASE_S = 60  # a claimed item comes due again after this if its ticker died mid-step
DUE_KINDS = ("recycle",)


def due_shard(item_id: str) -> int:
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) % DUE_SHARDS


def due(kind: str, shard: int) -> str:
    """Sorted set item id -> due ts (``recycle``: lead id -> the moment its score decays to recycle_below)."""
    return f"{PREFIX}:{{due:{shard}}}:{kind}"


SLA_FIGURES = f"{PREFIX}:sla:figures"
"""List of JSON records (accepts, manual reassignments) for the workers' SLA metrics; each is popped once."""
SLA_FIGURES_MAX = 100_000


def console_session(session_hash: str) -> str:
    """Hash token_hash, role, name, rep_id, csrf, created: one signed-in ops console session (router/admin/console),
    keyed by the sha256 hex of the session cookie's value (never the value itself); expires with the session."""
    return f"{PREFIX}:admin:session:{session_hash}"


HEALTH_SAMPLES_MAX = 240


def health_samples() -> str:
    """List (newest first) of JSON samples of the fleet's metrics for the console's Health page sparklines
    (router/admin/console/health.py); trimmed to HEALTH_SAMPLES_MAX."""
    return f"{PREFIX}:admin:health:samples"


def health_tick(bucket: int) -> str:
    """String with a TTL: taken (SET NX) by the one admin process that records the health sample of one
    interval (``bucket`` is the sample time divided by LEADROUTER_ADMIN_HEALTH_SAMPLE_S)."""
    return f"{PREFIX}:admin:health:tick:{bucket}"


# --- Personal data: per-person data keys and tombstones (router/storage/pii.py; issue 16.7) -----------
# Added keys only.  ``subject`` is a keyed hash (HMAC with LEADROUTER_PII_KEY) of the person's email,
# never the email or a plain digest of it.  Both keys of a person share ``{P:<subject>}``, so reading,
# creating and shredding a key is one call on one slot.

FORGET_GRACE_S = 3600  # a forgotten lead's marker outlives events that were already being processed


def pii_key(subject: str) -> str:
    """String: the person's data key (random 256 bits, wrapped with the master key); deleted on forget."""
    return f"{PREFIX}:{{P:{subject}}}:dk"


def pii_gone(subject: str) -> str:
    """String (forget time): the tombstone; the collector and the worker drop the person's events."""
    return f"{PREFIX}:{{P:{subject}}}:gone"


# --- Learning from outcomes: the decision log and the CRM webhook (issue 12.2) -----------------------

VECTORS = f"{PREFIX}:vectors"
"""Stream of JSON records (field ``json``): the feature vector, score, model version and probability the worker
used at each crossing and each routing decision (router/worker/learning.py).  Capped; forget XDELs a person's."""
VECTORS_MAXLEN = 500_000


def webhook_seen(digest: str) -> str:
    """String: a CRM webhook delivery already applied (sha256 of its signature), kept for the replay window."""
    return f"{PREFIX}:webhook:seen:{digest}"


# --- The ops console's live feed, dead letters and audit trail (issue 14; appended) -----------------
# Streams hold ids (lead, rep, assignment), statuses and times, never a person's name or email:
# the console looks names up when it shows an entry, so a forgotten person's entry shows no name.
# Erasure (router/worker/privacy.py) also XDELs the entries that name the lead.

LIVE = f"{PREFIX}:console:live"
"""Stream: crossings, alerts and per-channel delivery outcomes as they happen (router/storage/live.py)."""
LIVE_MAXLEN = 10_000

DEAD_LETTERS = f"{PREFIX}:alerts:dead"
"""Stream: alerts that failed on a channel, with the sealed record the dead-letter topic got, for the
console's Replay (router/storage/live.py); a replayed entry is deleted."""
DEAD_LETTERS_MAXLEN = 10_000

AUDIT = f"{PREFIX}:audit"
"""Stream: every change made through the console, the admin API or the CLI: who, when, what
(router/storage/audit.py)."""
AUDIT_MAXLEN = 200_000
LEAD_AUDIT_KEPT = 200


def lead_audit(lead_id: str) -> str:
    """List of JSON audit entries about one lead, newest first (router/storage/audit.py)."""
    return f"{PREFIX}:{{L:{lead_id}}}:audit"
