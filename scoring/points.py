"""Turn one event into the points it earns, with a reason per matching rule.

Machine confidence: an :class:`~models.events.Event` carries ``machine`` (0..1,
how likely a mail privacy proxy, link scanner or crawler made the hit) and
``machine_reason``.  Nothing is dropped: every rule's points are multiplied by
``1 - machine`` (so ``machine = 0.9`` keeps 10 %), and the reason's detail
says ``(discounted 90%: apple mail privacy proxy)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from urllib.parse import urlsplit

from models.events import Event, EventType
from models.lead import Reason
from models.score import RuleHit
from scoring.config import ScoringConfig, ScoringRule
from scoring.match import category_of, properties, schema_matches, schema_of

HAND_RAISER_MAX_MACHINE = 0.5
"""A hit whose ``machine`` confidence is at or above this never raises a hand: a bot
filling the demo form still earns its (discounted) points but does not route the lead."""


def machine_discount(points: float, machine: float) -> float:
    """``points * (1 - machine)``: what a hit is worth given how likely a machine made it.

    ``machine`` is clamped to 0..1 (NaN counts as 0, a person).  The result is
    rounded to 6 decimals so ``10 * (1 - 0.9)`` reads ``1.0``, not
    ``0.9999999999999998``, and ``-0.0`` becomes ``0.0``.  Negative points are
    discounted the same way: a link scanner hitting the unsubscribe page says
    little about the person.
    """
    share = _machine_share(machine)
    if share == 0.0:
        return points
    return round(points * (1.0 - share), 6) + 0.0


def _machine_share(machine: float) -> float:
    if not machine > 0.0:  # also NaN
        return 0.0
    return min(float(machine), 1.0)


def _percent(share: float) -> str:
    pct = share * 100.0
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 1e-9 or pct >= 1.0 else f"{pct:.1f}%"


def discount_note(event: Event) -> str:
    """`` (discounted 90%: apple mail privacy proxy)`` for a machine-likely hit, else ``""``."""
    share = _machine_share(event.machine)
    if share == 0.0:
        return ""
    why = (event.machine_reason or "").strip() or "likely automated"
    return f" (discounted {_percent(share)}: {why})"


def score_event(event: Event, config: ScoringConfig) -> tuple[Reason, ...]:
    """One :class:`Reason` per rule the event matches, in config order.

    Every matching rule adds its points (there is no first-match), so a demo
    request earns both the "any form" points and the demo-request points.
    An event no rule matches returns ``()``.

    Points are discounted by the event's machine confidence
    (:func:`machine_discount`: ``points * (1 - event.machine)``), and the
    reason's detail says so, e.g. ``opened email (discounted 90%: apple mail
    privacy proxy)``.  A hit with ``machine >= 0.5`` is never a hand-raiser.
    Caps are not applied here: use :func:`score_event_hits` and
    :func:`scoring.caps.apply_caps` for that.
    """
    return tuple(hit.reason for hit in score_event_hits(event, config))


def score_event_hits(event: Event, config: ScoringConfig) -> tuple[RuleHit, ...]:
    """Like :func:`score_event`, each reason paired with its rule's ``cap_per_day`` and ``once_per_lead``.

    This is the cap-aware path: pass the hits to :func:`scoring.caps.apply_caps`
    (or to the Lua script, via :func:`scoring.caps.hits_json`) to get the points
    actually granted.
    """
    rules = config.rules_for(event.type)
    if not rules:
        return ()
    target = url_target(event.url)
    detail = describe_event(event) + discount_note(event)
    machine_hand_ok = _machine_share(event.machine) < HAND_RAISER_MAX_MACHINE
    return tuple(
        RuleHit(
            reason=Reason(
                rule=rule.name,
                points=machine_discount(rule.points, event.machine),
                event_id=event.event_id,
                event_type=event.type.value,
                ts=event.ts,
                detail=detail,
                hand_raiser=rule.hand_raiser and machine_hand_ok,
            ),
            cap_per_day=rule.cap_per_day,
            once=rule.once_per_lead,
        )
        for rule in rules
        if rule_matches(rule, event, target)
    )


def total_points(reasons: Iterable[Reason]) -> float:
    """The sum of the reasons' points (``math.fsum``, so order does not matter)."""
    return math.fsum(r.points for r in reasons)


def is_hand_raiser(reasons: Iterable[Reason]) -> bool:
    """True when any reason came from a hand-raiser rule (lead is sales-ready at once)."""
    return any(r.hand_raiser for r in reasons)


def rule_matches(rule: ScoringRule, event: Event, target: str | None) -> bool:
    """Whether ``rule`` matches ``event``; ``target`` is :func:`url_target` of its URL."""
    if rule.event is not event.type:
        return False
    if rule.url is not None and (target is None or rule.url.search(target) is None):
        return False
    if rule.forms and event.form_id not in rule.forms:
        return False
    if rule.campaign is not None and rule.campaign != event.campaign:
        return False
    if rule.event_names and event.name not in rule.event_names:
        return False
    if rule.event_name_regex is not None and (event.name is None or rule.event_name_regex.search(event.name) is None):
        return False
    if rule.categories and category_of(event) not in rule.categories:
        return False
    if rule.actions and event.traits.get("action") not in rule.actions:
        return False
    if rule.labels and event.traits.get("label") not in rule.labels:
        return False
    if rule.schemas and not any(schema_matches(s, schema_of(event)) for s in rule.schemas):
        return False
    if rule.properties:
        props = properties(event)
        return all(c.matches(props) for c in rule.properties)
    return True


def url_target(url: str | None) -> str | None:
    """The part of a URL that ``url`` rules search: path plus ``?query``.

    ``https://acme.io/pricing?plan=pro#faq`` gives ``/pricing?plan=pro``; a bare
    host gives ``/``.  Scheme, host and fragment are dropped so rules work the
    same on every domain and environment.
    """
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _url_path(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return url


def describe_event(event: Event) -> str:
    """A short human text for alerts, e.g. ``viewed /pricing``."""
    path = _url_path(event.url)
    campaign = f" campaign {event.campaign}" if event.campaign else ""
    if event.type is EventType.PAGE_VIEW:
        if not path and event.name:
            screen = "screen" if event.traits.get("$call") == "screen" else "page"
            return f"viewed {screen} {event.name!r}"
        return f"viewed {path}" if path else "viewed a page"
    if event.type is EventType.EMAIL_OPEN:
        return f"opened email{campaign}" if campaign else "opened an email"
    if event.type is EventType.EMAIL_CLICK:
        link = f"clicked {path}" if path else "clicked a link"
        return f"{link} in email{campaign}" if campaign else f"{link} in an email"
    if event.type is EventType.FORM_FILL:
        return f"filled form {event.form_id}" if event.form_id else "filled a form"
    if event.type is EventType.TRACK and event.name:
        return f"did {event.name!r}"
    return event.type.value
