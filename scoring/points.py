"""Turn one event into the points it earns, with a reason per matching rule."""

from __future__ import annotations

import math
from collections.abc import Iterable
from urllib.parse import urlsplit

from models.events import Event, EventType
from models.lead import Reason
from scoring.config import ScoringConfig, ScoringRule


def score_event(event: Event, config: ScoringConfig) -> tuple[Reason, ...]:
    """One :class:`Reason` per rule the event matches, in config order.

    Every matching rule adds its points (there is no first-match), so a demo
    request earns both the "any form" points and the demo-request points.
    An event no rule matches returns ``()``.
    """
    rules = config.rules_for(event.type)
    if not rules:
        return ()
    target = url_target(event.url)
    detail = describe_event(event)
    return tuple(
        Reason(
            rule=rule.name,
            points=rule.points,
            event_id=event.event_id,
            event_type=event.type.value,
            ts=event.ts,
            detail=detail,
            hand_raiser=rule.hand_raiser,
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
    return rule.campaign is None or rule.campaign == event.campaign


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
        return f"viewed {path}" if path else "viewed a page"
    if event.type is EventType.EMAIL_OPEN:
        return f"opened email{campaign}" if campaign else "opened an email"
    if event.type is EventType.EMAIL_CLICK:
        link = f"clicked {path}" if path else "clicked a link"
        return f"{link} in email{campaign}" if campaign else f"{link} in an email"
    if event.type is EventType.FORM_FILL:
        return f"filled form {event.form_id}" if event.form_id else "filled a form"
    return event.type.value
