"""The Snowplow tracker protocol, mapped onto :class:`models.Event`.  Pure functions.

Endpoints (handled in :mod:`router.ingest.handlers`)
    ``GET /i`` and ``GET /ice.png``: one event in the query string, answered
    with the 1x1 GIF whatever happens.  ``POST /com.snowplowanalytics.snowplow/tp2``:
    ``{"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
    "data": [{...}, ...]}`` (gzip accepted), answered ``200 ok``.  Snowplow
    has no write key: ``snowplow_app_ids`` optionally restricts the ``aid``
    values accepted, and ``snowplow_enabled=0`` switches the endpoints off.

Mapping (documented decisions)
    * ``e=pv`` -> ``page_view``: ``url``, ``page`` -> title, ``refr`` -> referrer.
    * ``e=se`` -> ``track``: ``name`` = "<se_ca>/<se_ac>" (or the action
      alone); ``traits`` category, action, label, property, value.
    * ``e=ue`` -> the self-describing event inside ``ue_pr`` (JSON) or ``ue_px``
      (base64url JSON): ``name`` = the inner schema's event name (e.g.
      ``submit_form`` for ``iglu:com.snowplowanalytics.snowplow/submit_form/...``),
      ``traits["$schema"]`` = the full iglu URI, its data flattened into
      ``traits``.  A form event (``submit_form``, ``form_submit``,
      ``segment_form_events`` names ...) that carries an email (``email`` in
      its data, or an element named like ``email``) becomes a ``form_fill``
      with ``form_id`` from ``formId``/``form_id``; otherwise a ``track``.
    * ``e=tr`` / ``e=ti`` (ecommerce) -> ``track`` named ``transaction`` /
      ``transaction_item``.  Page pings (``e=pp``) -> ``page_ping``: engagement
      time on the lead (bounded per ping interval and per session by the worker),
      never scored.  Unknown types are ignored and counted.
    * Identity: ``duid`` (domain user id; else ``nuid``/``tnuid``) ->
      ``visitor_id``, ``uid`` -> ``user_id``, ``sid`` -> ``traits["$session_id"]``.
    * ``eid`` -> ``message_id``; ``event_id`` = sha256("snowplow", app id, eid),
      so a tracker's retry is the same event (and de-duplicated at ingest).
    * ``ts`` is the receive time; ``dtm`` / ``stm`` (ms) go to
      ``traits["$timestamp"]`` / ``["$sent_at"]`` as ISO times and
      ``$event_ts`` is the skew-corrected epoch time (received - (stm - dtm)).
    * ``ua`` (else the request's User-Agent) -> ``user_agent``; the request's
      address -> ``ip``; ``aid`` -> ``traits["$app_id"]``; ``tv`` -> ``$library``.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from models import Event, EventType
from router.errors import CollectorError
from router.ingest.machine import classify_web_hit
from router.ingest.segment import (
    FORM_ID_RE,
    MAX_FIELD,
    IngestContext,
    IngestError,
    Mapped,
    MessageError,
    clean_url,
    derive_event_id,
    email_from,
    flatten,
    identifier,
    normalise_event_name,
    parse_name_list,
    profile_fields,
    slug,
    text,
    utm_from,
)

PAYLOAD_SCHEMA_PREFIX = "iglu:com.snowplowanalytics.snowplow/payload_data/"
MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 2500
FORM_SCHEMA_NAMES = parse_name_list("submit_form,form_submit,form_submitted,form_submission,sign_up,signed_up,"
                                    "demo_request,demo_requested")
_IGLU_RE = re.compile(r"^iglu:([^/]+)/([^/]+)/([^/]+)/([0-9]+-[0-9]+-[0-9]+)$")


class Ignored(CollectorError):
    """A valid event we deliberately do not map (page pings, unknown types)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def payload_events(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The events of a ``payload_data`` POST body; raises :class:`IngestError`."""
    schema = data.get("schema")
    if schema is not None and (not isinstance(schema, str) or not schema.startswith(PAYLOAD_SCHEMA_PREFIX)):
        raise IngestError(400, "invalid_schema", f"schema {schema!r} is not {PAYLOAD_SCHEMA_PREFIX}jsonschema/1-0-*")
    events = data.get("data")
    if not isinstance(events, list):
        raise IngestError(400, "invalid_payload", "the payload needs \"data\": a list of events")
    if len(events) > MAX_EVENTS:
        raise IngestError(400, "too_many_events", f"a payload is limited to {MAX_EVENTS} events; this has {len(events)}")
    return events


def _ms_iso(value: Any) -> tuple[str | None, float | None]:
    try:
        ms = int(str(value))
    except (TypeError, ValueError):
        return None, None
    if ms <= 0:
        return None, None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds"), ms / 1000
    except (OverflowError, OSError, ValueError):
        return None, None


def _b64json(value: str) -> Any:
    # The URL-safe decoder also reads the standard alphabet some trackers use.
    raw = base64.urlsafe_b64decode(value.strip() + "=" * (-len(value.strip()) % 4))
    return orjson.loads(raw)


def self_describing(params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(schema URI, data) of an ``e=ue`` event; raises :class:`MessageError`."""
    try:
        if params.get("ue_pr"):
            envelope = orjson.loads(str(params["ue_pr"]))
        elif params.get("ue_px"):
            envelope = _b64json(str(params["ue_px"]))
        else:
            raise MessageError("ue_pr", "a self-describing event needs ue_pr or ue_px")
    except (orjson.JSONDecodeError, binascii.Error, ValueError) as exc:
        raise MessageError("ue_px", f"the self-describing event is not readable JSON: {exc}") from None
    inner = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("schema"), str):
        raise MessageError("ue_px", "the self-describing event needs data.schema and data.data")
    data = inner.get("data")
    return inner["schema"], data if isinstance(data, dict) else {}


def schema_event_name(schema: str) -> str:
    m = _IGLU_RE.match(schema)
    return m.group(2) if m else schema.rsplit("/", 1)[-1]


def _form_email(data: Mapping[str, Any]) -> tuple[str | None, bool]:
    candidates: list[Any] = [data.get("email")]
    elements = data.get("elements")
    if isinstance(elements, list):
        for el in elements:
            if isinstance(el, Mapping) and "email" in str(el.get("name", "")).lower():
                candidates.append(el.get("value"))
    return email_from(*candidates)


def _form_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """Snowplow's submit_form ``elements`` as a flat {name: value}, merged with the data."""
    out: dict[str, Any] = {k: v for k, v in data.items() if k != "elements"}
    elements = data.get("elements")
    if isinstance(elements, list):
        for el in elements:
            if isinstance(el, Mapping) and isinstance(el.get("name"), str):
                out.setdefault(el["name"], el.get("value"))
    return out


def map_event(params: Mapping[str, Any], ctx: IngestContext) -> Mapped:
    """One tracker-protocol event as our event; raises :class:`MessageError` or :class:`Ignored`."""
    kind = text(params.get("e"), 8)
    if not kind:
        raise MessageError("e", "the event type \"e\" is missing")
    dropped: list[str] = []
    app_id = text(params.get("aid"), 64)
    eid = identifier(params.get("eid"))
    event_id = derive_event_id("snowplow", app_id or "", eid) if eid else uuid.uuid4().hex
    visitor_id = identifier(params.get("duid")) or identifier(params.get("nuid")) or identifier(params.get("tnuid"))
    user_id = identifier(params.get("uid"))
    url, ok = clean_url(text(params.get("url"), 4096))
    if not ok:
        dropped.append("url")
    referrer, ok_ref = clean_url(text(params.get("refr"), 4096))
    if not ok_ref:
        dropped.append("referrer")
    user_agent = text(params.get("ua")) or ctx.request_user_agent
    traits: dict[str, str] = {}
    base: dict[str, Any] = {
        "event_id": event_id, "ts": ctx.received_at, "source": ctx.source, "visitor_id": visitor_id,
        "user_id": user_id, "message_id": eid, "ip": ctx.request_ip, "user_agent": user_agent, "url": url,
        "referrer": referrer, "utm": utm_from({}, url),
    }
    if kind == "pv":
        event = Event(type=EventType.PAGE_VIEW, title=text(params.get("page")), **base)
    elif kind == "se":
        category, action = text(params.get("se_ca"), 128), text(params.get("se_ac"), 128)
        if not action:
            raise MessageError("se_ac", "a structured event needs its action in se_ac")
        traits = {k: v for k, v in (("category", category), ("action", action),
                                    ("label", text(params.get("se_la"))),
                                    ("property", text(params.get("se_pr"))),
                                    ("value", text(params.get("se_va"), 64))) if v}
        event = Event(type=EventType.TRACK, name=f"{category}/{action}" if category else action, **base)
    elif kind == "ue":
        schema, data = self_describing(params)
        name = schema_event_name(schema)[:MAX_FIELD]
        values = _form_values(data)
        traits = flatten(values)
        traits["$schema"] = schema[:256]
        email, bad = _form_email(data)
        if bad:
            dropped.append("email")
        norm = normalise_event_name(name)
        if email and (norm in FORM_SCHEMA_NAMES or norm in ctx.form_events):
            form_id = next((t for t in (text(values.get(k), 64) for k in ("formId", "form_id", "form"))
                            if t and FORM_ID_RE.match(t)), None) or slug(name)
            event = Event(type=EventType.FORM_FILL, name=name, email=email, form_id=form_id,
                          fields=profile_fields(values), **base)
        else:
            event = Event(type=EventType.TRACK, name=name, email=email, **base)
    elif kind in ("tr", "ti"):
        name = "transaction" if kind == "tr" else "transaction_item"
        traits = flatten({k: v for k, v in params.items() if k.startswith(("tr_", "ti_"))})
        event = Event(type=EventType.TRACK, name=name, **base)
    elif kind == "pp":
        # A heartbeat while the page is open: time on site (bounded in apply_event.lua by the
        # collector's receive times, never the tracker's), no score, no activity.
        event = Event(type=EventType.PAGE_PING, **base)
    else:
        raise Ignored("unknown")
    if app_id:
        traits["$app_id"] = app_id
    if text(params.get("sid"), 64):
        traits["$session_id"] = str(text(params.get("sid"), 64))
    if text(params.get("tv"), 64):
        traits["$library"] = str(text(params.get("tv"), 64))
    dtm_iso, dtm = _ms_iso(params.get("dtm"))
    stm_iso, stm = _ms_iso(params.get("stm"))
    if dtm_iso:
        traits["$timestamp"] = dtm_iso
    if stm_iso:
        traits["$sent_at"] = stm_iso
    if dtm is not None and stm is not None:
        traits["$event_ts"] = f"{ctx.received_at - (stm - dtm):.3f}"
    elif dtm is not None:
        traits["$event_ts"] = f"{dtm:.3f}"
    event = replace(event, traits=traits)
    if event.type in (EventType.PAGE_VIEW, EventType.FORM_FILL, EventType.TRACK):
        # Crawlers and headless browsers always count.  HTTP libraries only when
        # the tracker reported the visitor's agent in ``ua`` (and
        # machine_flag_http_clients is on): a server-side tracker's own HTTP
        # client is not the visitor.
        explicit_ua = bool(text(params.get("ua")))
        verdict = classify_web_hit(event.user_agent, event.ip, ctx.networks,
                                   browser_expected=explicit_ua and ctx.flag_http_clients)
        if verdict.score:
            event = replace(event, machine=verdict.score, machine_reason=verdict.reason)
    return Mapped(event, dropped)


def stringify(params: Mapping[str, Any]) -> dict[str, Any]:
    """POSTed events are objects of strings; keep them as given (numbers become text)."""
    return {str(k): (v if isinstance(v, str) else (str(v) if isinstance(v, (int, float)) else v))
            for k, v in params.items()}
