"""Every Redis key the service uses, in one place.

Keys of one lead share the hash tag ``{L:<id>}``, keys of one team ``{T:<team>}``
and keys of one assignment ``{A:<id>}``, so each Lua script touches one hash
slot (Redis Cluster) except the one-off merge of an anonymous profile.
Lead ids are hex digests, so user input never lands inside a hash tag.
"""

from __future__ import annotations

import hashlib

PREFIX = "lr"

# How long an event id is remembered for de-duplication.  Kafka redelivers
# after a crash or rebalance within minutes; a week is a wide margin.
SEEN_WINDOW_S = 7 * 24 * 3600
REASONS_KEPT = 100
RECENT_KEPT = 20
TURN_TTL_S = 30 * 24 * 3600
SENT_TTL_S = 30 * 24 * 3600


def normalise_email(email: str) -> str:
    return email.strip().lower()


def lead_id_for_email(email: str) -> str:
    digest = hashlib.sha256(normalise_email(email).encode()).hexdigest()[:24]
    return f"L{digest}"


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
    """Sorted set event_id -> ts: the events already counted."""
    return f"{PREFIX}:{{L:{lead_id}}}:seen"


def reasons(lead_id: str) -> str:
    """List of JSON reasons, newest first: why the score is what it is."""
    return f"{PREFIX}:{{L:{lead_id}}}:reasons"


def recent(lead_id: str) -> str:
    """List of JSON event summaries, newest first: the activity timeline."""
    return f"{PREFIX}:{{L:{lead_id}}}:recent"


def lead_keys(lead_id: str) -> list[str]:
    return [lead(lead_id), seen(lead_id), reasons(lead_id), recent(lead_id)]


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


def team_rr(team: str) -> str:
    """Counter: the team's round-robin position, shared by every worker."""
    return f"{PREFIX}:{{T:{team}}}:rr"


def team_turn(team: str, assignment_id: str) -> str:
    """String: the rep a given assignment got, so a retry gets the same rep."""
    return f"{PREFIX}:{{T:{team}}}:turn:{assignment_id}"


def alert_sent(assignment_id: str) -> str:
    """Hash channel -> ts: channels an assignment's alert already went out on."""
    return f"{PREFIX}:{{A:{assignment_id}}}:sent"


def rep_leads(rep_id: str) -> str:
    """Sorted set lead_id -> assigned ts: a rep's open leads."""
    return f"{PREFIX}:rep:{rep_id}:leads"
