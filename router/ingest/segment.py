"""The Segment HTTP Tracking API (also spoken by RudderStack's SDKs), mapped onto :class:`models.Event`.

Pure functions (no I/O) plus the Redis message-id de-duplicator.  The HTTP
handler lives in :mod:`router.ingest.handlers`; this module decides what a request
means.

Wire protocol (unchanged from Segment's)
    ``POST /v1/{identify,track,page,screen,group,alias,batch}`` and the
    analytics.js short forms ``/v1/{i,t,p,s,g,a,b}``.  The body is JSON whatever
    the Content-Type (analytics.js sends ``text/plain``), optionally gzipped
    (``Content-Encoding: gzip``).  The write key is the Basic-auth user name
    (RudderStack sends it only there) or ``writeKey`` in the body.  The limits
    apply to the decoded JSON.  Success is
    ``200 {"success": true}``; errors carry ``{"success": false, "code",
    "message"}`` (the fields the SDKs log).

Limits (Segment's)
    32 KB per message: a single call whose body is larger gets ``413``, a batch
    holding a larger message gets ``400`` naming the message.  500 KB per batch
    request (after gunzip) gets ``413``; more than 2,500 messages ``400``.

Mapping (documented decisions)
    * ``anonymousId`` -> ``visitor_id``; ``userId`` -> ``user_id``;
      ``messageId`` -> ``message_id``.
    * ``event_id`` = first 32 hex of sha256("segment", write key, messageId):
      a retried message gets the same id, so the worker counts it once even
      after the collector's own 24 h+ de-duplication window.
    * ``page`` / ``screen`` -> ``page_view``: url, title, referrer from
      ``properties`` then ``context.page``; ``name`` is the page/screen name,
      its ``category`` goes to ``traits["$category"]``; the other properties
      are flattened into ``traits``; a screen has no url and gets
      ``traits["$call"] = "screen"``.
    * ``track`` -> ``track`` with ``name`` = the event; its ``properties``
      (flattened to strings) go to ``traits``.  A track whose name is one of
      ``segment_form_events`` (default "Form Submitted", "Signed Up", "Demo
      Requested"; compared ignoring case, spaces, ``_`` and ``-``) becomes a
      ``form_fill``: ``email`` from ``properties.email`` or
      ``context.traits.email``, ``form_id`` from ``properties.form_id`` /
      ``formId`` / ``form`` / ``form_name`` or else the slug of the event name,
      ``fields`` from the known profile fields, ``consent`` included.  Without
      an email it is an anonymous form fill: its points stay on the visitor's
      profile, and a hand-raiser counts when the person identifies later
      (within the scoring file's ``identify_window_hours``).
    * ``identify`` -> ``identify``: ``email`` from ``traits.email``, all traits
      flattened to strings in ``traits`` (``company``, ``title``, ``address.city``
      ...), and the known profile fields normalised into ``fields``
      (first_name, last_name, name, company, job_title, country, region,
      phone), as a form fill would carry them.
    * ``group`` -> ``group`` with ``group_id`` and the company traits (name,
      domain/website, industry, employees ...) in ``traits``.
    * ``alias`` -> ``alias`` with ``user_id`` = userId, ``previous_id`` = previousId.
    * Time: ``ts`` stays the collector's receive time (decay is anchored on
      it).  The sender's clock goes into ``traits`` under keys starting with
      ``$``, which are collector metadata, never user traits:
      ``$timestamp`` (the message's ``timestamp``), ``$sent_at``,
      ``$event_ts`` (epoch seconds corrected for the sender's clock skew:
      received - (sentAt - timestamp)), and ``$library`` (context.library).
    * ``context.ip`` (else the request's address) -> ``ip``;
      ``context.userAgent`` -> ``user_agent``; ``context.campaign`` -> ``utm``
      (else the page URL's utm_* parameters).
    * A message without userId/anonymousId (alias: userId and previousId),
      a track without ``event`` or a group without ``groupId`` is invalid:
      a single call answers ``400``; inside a batch it is skipped and counted
      (Segment also answers 200 for a batch and drops bad messages).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import orjson
from redis.exceptions import RedisError

from models import Event, EventType
from router import metrics
from router.errors import CollectorError
from router.ingest.machine import Network, classify_web_hit
from router.storage import keys
from router.storage.redis import AnyRedis

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500

# --------------------------------------------------------------------------- field cleaning
# Shared by every ingest path (pixel, form, Segment, Snowplow).
MAX_URL = 2048
MAX_TEXT = 512
MAX_FIELD = 256
MAX_ID = 256
MAX_TRAITS = 100
MAX_TRAIT_KEY = 128
# Deliberately practical, not RFC 5322: one @, a dotted domain, no spaces.
EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
FORM_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def valid_email(value: str) -> bool:
    return len(value) <= 254 and EMAIL_RE.match(value) is not None


def clean_url(value: str | None) -> tuple[str | None, bool]:
    """(url, ok): only absolute http(s) URLs of sane length are kept."""
    if not value:
        return None, True
    if len(value) > MAX_URL or _CONTROL_RE.search(value):
        return None, False
    try:
        parts = urlsplit(value)
    except ValueError:
        return None, False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None, False
    return value, True


def utm_from(params: Mapping[str, str], url: str | None) -> dict[str, str]:
    utm = {k: params[k][:MAX_FIELD] for k in UTM_KEYS if params.get(k)}
    if url and not utm and ("utm_" in url or "%" in url):  # else no key of its query can be a utm_ one
        query = dict(parse_qsl(urlsplit(url).query))
        utm = {k: query[k][:MAX_FIELD] for k in UTM_KEYS if query.get(k)}
    return utm


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A scalar as trimmed text (numbers too), or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] or None


def identifier(value: Any) -> str | None:
    """An id (user, anonymous, group): text or a number, no control characters."""
    out = text(value, MAX_ID)
    if out is None or _CONTROL_RE.search(out):
        return None
    return out


def scalar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value[:MAX_TEXT]
    return None


def flatten(obj: Mapping[str, Any], *, prefix: str = "", depth: int = 0,
            out: dict[str, str] | None = None) -> dict[str, str]:
    """Traits/properties as ``{"a.b": "text"}``: scalars as text, lists of scalars comma-joined."""
    out = {} if out is None else out
    for raw_key, value in obj.items():
        if len(out) >= MAX_TRAITS:
            break
        key = f"{prefix}{raw_key}"[:MAX_TRAIT_KEY]
        if key.startswith("$"):
            continue  # "$..." is reserved for collector metadata
        if isinstance(value, Mapping):
            if depth < 2:
                flatten(value, prefix=f"{key}.", depth=depth + 1, out=out)
            continue
        if isinstance(value, list):
            items = [s for s in (scalar(v) for v in value) if s is not None]
            if items:
                out[key] = ",".join(items)[:MAX_TEXT]
            continue
        s = scalar(value)
        if s is not None:
            out[key] = s
    return out


def obj(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def email_from(*candidates: Any) -> tuple[str | None, bool]:
    """(first valid email, saw an invalid one)."""
    bad = False
    for c in candidates:
        if isinstance(c, str) and c.strip():
            email = c.strip().lower()
            if valid_email(email):
                return email, bad
            bad = True
    return None, bad


def derive_event_id(namespace: str, scope: str, message_id: str) -> str:
    """A stable event id for a sender's message id: retries map to the same event."""
    digest = hashlib.sha256(f"{namespace}\x00{scope}\x00{message_id}".encode()).hexdigest()
    return digest[:32]


def normalise_event_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


def parse_name_list(value: str) -> frozenset[str]:
    return frozenset(normalise_event_name(n) for n in value.split(",") if n.strip())


def slug(value: str) -> str:
    out = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    return out[:64] or "form"


def parse_iso(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp()


# --------------------------------------------------------------------------- request level


class IngestError(CollectorError):
    """A request the API refuses as a whole: status, a machine code and a message naming the fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"success": False, "code": self.code, "message": self.message}


def basic_auth_user(header: str | None) -> str | None:
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, _, _ = decoded.partition(":")
    return user or None


# Content-Encodings the collector decodes itself (router/ingest/request.py read_limited: bounded as it
# streams, a truncated stream is a 400), normalised to the decoder's name ("" = none).
BODY_ENCODINGS: Mapping[str, str] = {"": "", "identity": "", "gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
# JSON bodies nested deeper than this are refused (400) before anything walks or re-serialises them.
MAX_JSON_DEPTH = 32


def check_encoding(encoding: str | None) -> str:
    """The decoder for a Content-Encoding header ("" for none, "gzip", "deflate"); 415 for anything else."""
    name = BODY_ENCODINGS.get((encoding or "").strip().lower())
    if name is None:
        shown = (encoding or "")[:40]
        raise IngestError(415, "unsupported_encoding",
                          f"Content-Encoding {shown!r} is not supported; send gzip, deflate or no encoding")
    return name


def json_depth_problem(data: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """The path of the first value nested more than ``limit`` objects/lists deep, or None.

    The top-level value is depth 1.  Iterative, so any depth orjson accepts is safe to walk.
    """
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        if depth > limit:
            return path or "the body"
        for key, child in items:
            if isinstance(child, (dict, list)):
                if isinstance(key, int):
                    step = f"{path}[{key}]"
                else:
                    step = f"{path}.{key}" if path else str(key)
                stack.append((child, depth + 1, step if len(step) <= 120 else step[:117] + "..."))
    return None


def check_depth(data: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """400 naming the field when ``data`` is nested deeper than ``limit``."""
    path = json_depth_problem(data, limit)
    if path is not None:
        raise IngestError(400, "too_deeply_nested",
                          f"{path} is nested more than {limit} levels deep; JSON is limited to {limit} levels of "
                          "objects and lists")


def parse_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise IngestError(400, "invalid_json", "the body must be a JSON object")
    check_depth(data)
    return data


CALLS: Mapping[str, str] = {
    "identify": "identify", "i": "identify", "track": "track", "t": "track", "page": "page", "p": "page",
    "screen": "screen", "s": "screen", "group": "group", "g": "group", "alias": "alias", "a": "alias",
    "batch": "batch", "b": "batch",
}
MESSAGE_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})


def split_messages(call: str, data: Mapping[str, Any], body_len: int) -> list[dict[str, Any]]:
    """The messages of a request, each with its type, batch-level context merged in."""
    if call != "batch":
        if body_len > MAX_MESSAGE_BYTES:
            raise IngestError(413, "message_too_large",
                              f"a message is limited to 32 KB ({MAX_MESSAGE_BYTES} bytes); this one is {body_len}")
        return [{**data, "type": call}]
    batch = data.get("batch")
    if not isinstance(batch, list):
        raise IngestError(400, "invalid_batch", "a batch needs \"batch\": a list of messages")
    if len(batch) > MAX_BATCH_MESSAGES:
        raise IngestError(400, "batch_too_large",
                          f"a batch is limited to {MAX_BATCH_MESSAGES} messages; this one has {len(batch)}")
    shared_ctx = obj(data.get("context"))
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(batch):
        if not isinstance(msg, dict):
            out.append({"type": None, "_index": i})
            continue
        size = len(orjson.dumps(msg))
        if size > MAX_MESSAGE_BYTES:
            raise IngestError(400, "message_too_large",
                              f"message {i} of the batch is {size} bytes; a message is limited to 32 KB "
                              f"({MAX_MESSAGE_BYTES} bytes)")
        merged = dict(msg)
        if shared_ctx:
            ctx = obj(msg.get("context"))
            merged["context"] = {**shared_ctx, **ctx}
        if "sentAt" not in merged and "sentAt" in data:
            merged["sentAt"] = data["sentAt"]
        merged["_index"] = i
        out.append(merged)
    return out


# --------------------------------------------------------------------------- message level


class MessageError(CollectorError):
    """One message is not usable; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class IngestContext:
    """What a mapping needs to know about the request."""

    write_key: str
    source: str
    received_at: float
    request_ip: str | None = None
    request_user_agent: str | None = None
    form_events: frozenset[str] = frozenset()
    networks: Sequence[Network] = ()
    # Flag HTTP-library user agents reported as the visitor's (``machine_flag_http_clients``).
    flag_http_clients: bool = False


@dataclass(slots=True)
class Mapped:
    event: Event
    dropped: list[str] = field(default_factory=list)  # fields ignored as invalid


_PROFILE_KEYS: Mapping[str, tuple[str, ...]] = {
    "first_name": ("first_name", "firstName", "firstname"),
    "last_name": ("last_name", "lastName", "lastname"),
    "name": ("name",),
    "company": ("company", "company_name", "companyName"),
    "job_title": ("job_title", "jobTitle", "title"),
    "country": ("country",),
    "region": ("region", "state"),
    "phone": ("phone",),
}
_FORM_ID_KEYS = ("form_id", "formId", "form", "form_name", "formName")


def profile_fields(*sources: Any) -> dict[str, str]:
    """Known profile fields from traits-like objects, named as form fields are."""
    out: dict[str, str] = {}
    for src in sources:
        if not isinstance(src, Mapping):
            continue
        address = obj(src.get("address"))
        for fname, aliases in _PROFILE_KEYS.items():
            if fname in out:
                continue
            for k in aliases:
                v = src.get(k)
                if fname == "company" and isinstance(v, Mapping):
                    v = v.get("name")
                value = text(v, MAX_FIELD)
                if value:
                    out[fname] = value
                    break
            if fname not in out and fname in ("country", "region") and address:
                value = text(address.get("country" if fname == "country" else "state"), MAX_FIELD)
                if value:
                    out[fname] = value
        if "consent" not in out and "consent" in src:
            c = src.get("consent")
            word = str(c).strip().lower()
            if c is True or word in ("1", "true", "yes", "on", "y"):
                out["consent"] = "true"
            elif c is False or word in ("0", "false", "no", "off", "n"):
                out["consent"] = "false"
    for k in ("country", "region"):
        if k in out and len(out[k]) <= 3:
            out[k] = out[k].upper()
    return out


def _client_ip(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _time_traits(msg: Mapping[str, Any], received_at: float) -> dict[str, str]:
    out: dict[str, str] = {}
    ts_raw, sent_raw = msg.get("timestamp") or msg.get("originalTimestamp"), msg.get("sentAt")
    if isinstance(ts_raw, str) and ts_raw:
        out["$timestamp"] = ts_raw[:64]
    if isinstance(sent_raw, str) and sent_raw:
        out["$sent_at"] = sent_raw[:64]
    ts, sent = parse_iso(ts_raw), parse_iso(sent_raw)
    if ts is not None and sent is not None:
        out["$event_ts"] = f"{received_at - (sent - ts):.3f}"
    elif ts is not None:
        out["$event_ts"] = f"{ts:.3f}"
    return out


def map_message(msg: Mapping[str, Any], ctx: IngestContext) -> Mapped:
    """One Segment message as an event; raises :class:`MessageError`."""
    mtype = msg.get("type")
    if mtype not in MESSAGE_TYPES:
        raise MessageError("type", f"message type {mtype!r} is unknown; use one of {', '.join(sorted(MESSAGE_TYPES))}")
    dropped: list[str] = []
    context = obj(msg.get("context"))
    ctx_traits = obj(context.get("traits"))
    page_ctx = obj(context.get("page"))
    props = obj(msg.get("properties"))
    user_id = identifier(msg.get("userId"))
    visitor_id = identifier(msg.get("anonymousId"))
    if msg.get("anonymousId") not in (None, "") and visitor_id is None:
        dropped.append("anonymousId")
    message_id = identifier(msg.get("messageId"))
    event_id = derive_event_id("segment", ctx.write_key, message_id) if message_id else uuid.uuid4().hex
    if mtype == "alias":
        previous_id = identifier(msg.get("previousId"))
        if not user_id or not previous_id:
            raise MessageError("previousId", "an alias needs both userId and previousId")
    elif not user_id and not visitor_id:
        raise MessageError("userId", f"a {mtype} needs userId or anonymousId")
    ip = _client_ip(context.get("ip")) or ctx.request_ip
    user_agent = text(context.get("userAgent"))
    traits: dict[str, str] = {}
    library = obj(context.get("library"))
    lib_name, lib_version = text(library.get("name"), 64), text(library.get("version"), 32)
    base: dict[str, Any] = {
        "event_id": event_id, "ts": ctx.received_at, "source": ctx.source, "visitor_id": visitor_id,
        "user_id": user_id, "message_id": message_id, "ip": ip, "user_agent": user_agent,
    }
    email: str | None = None
    if mtype in ("page", "screen"):
        raw_url = props.get("url") if isinstance(props.get("url"), str) else page_ctx.get("url")
        url, ok = clean_url(raw_url if isinstance(raw_url, str) else None)
        if not ok:
            dropped.append("url")
        raw_ref = props.get("referrer") if isinstance(props.get("referrer"), str) else page_ctx.get("referrer")
        referrer, ok_ref = clean_url(raw_ref if isinstance(raw_ref, str) else None)
        if not ok_ref:
            dropped.append("referrer")
        name = text(msg.get("name"), MAX_FIELD)
        title = text(props.get("title")) or text(page_ctx.get("title")) or (name if mtype == "screen" else None)
        traits = flatten({k: v for k, v in props.items() if k not in ("url", "referrer", "title")})
        if mtype == "screen":
            traits["$call"] = "screen"
        category = text(msg.get("category"), MAX_FIELD)
        if category:
            traits["$category"] = category
        email, bad = email_from(ctx_traits.get("email"))
        event = Event(type=EventType.PAGE_VIEW, url=url, referrer=referrer, title=title, name=name,
                      utm=_utm(context, url), email=email, **base)
    elif mtype == "track":
        name = text(msg.get("event"), MAX_FIELD)
        if not name:
            raise MessageError("event", "a track needs the event name in \"event\"")
        email, bad = email_from(props.get("email"), ctx_traits.get("email"))
        traits = flatten(props)
        url, _ = clean_url(page_ctx.get("url") if isinstance(page_ctx.get("url"), str) else None)
        if normalise_event_name(name) in ctx.form_events:
            # A form event counts as a form fill whether or not it says who sent it: an
            # anonymous one stays on the visitor's profile and counts when they identify.
            form_id = next((t for t in (text(props.get(k), 64) for k in _FORM_ID_KEYS)
                            if t and FORM_ID_RE.match(t)), None) or slug(name)
            event = Event(type=EventType.FORM_FILL, name=name, email=email, form_id=form_id,
                          fields=profile_fields(props, ctx_traits), url=url, utm=_utm(context, url), **base)
        else:
            event = Event(type=EventType.TRACK, name=name, email=email, url=url, utm=_utm(context, url), **base)
    elif mtype == "identify":
        raw_traits = obj(msg.get("traits")) or ctx_traits
        email, bad = email_from(raw_traits.get("email"), ctx_traits.get("email"))
        traits = flatten(raw_traits)
        event = Event(type=EventType.IDENTIFY, email=email, fields=profile_fields(raw_traits), **base)
    elif mtype == "group":
        group_id = identifier(msg.get("groupId"))
        if not group_id:
            raise MessageError("groupId", "a group needs groupId")
        raw_traits = obj(msg.get("traits"))
        traits = flatten(raw_traits)
        bad = False
        event = Event(type=EventType.GROUP, group_id=group_id, **base)
    else:  # alias
        bad = False
        event = Event(type=EventType.ALIAS, previous_id=identifier(msg.get("previousId")), **base)
    if bad:
        dropped.append("email")
    if lib_name:
        traits["$library"] = f"{lib_name}/{lib_version}" if lib_version else lib_name
    traits.update(_time_traits(msg, ctx.received_at))
    event = replace(event, traits=traits)
    if event.type is EventType.PAGE_VIEW or event.type is EventType.FORM_FILL:
        # context.userAgent is the visitor's (analytics.js reports it); a server-side SDK
        # sends none, and its own HTTP client is not the visitor.
        verdict = classify_web_hit(event.user_agent, event.ip, ctx.networks,
                                   browser_expected=bool(event.user_agent) and ctx.flag_http_clients)
        if verdict.score:
            event = replace(event, machine=verdict.score, machine_reason=verdict.reason)
    return Mapped(event, dropped)


def _utm(context: Mapping[str, Any], url: str | None) -> dict[str, str]:
    campaign = obj(context.get("campaign"))
    params: dict[str, str] = {}
    for ours, theirs in (("utm_source", "source"), ("utm_medium", "medium"), ("utm_campaign", "name"),
                         ("utm_term", "term"), ("utm_content", "content")):
        value = text(campaign.get(theirs), MAX_FIELD)
        if value:
            params[ours] = value
    return utm_from(params, url)


# --------------------------------------------------------------------------- de-duplication


class Deduper(Protocol):
    """Claims sender message ids (as derived event ids) so a retried message is stored once."""

    async def claim(self, event_ids: Sequence[str]) -> list[bool]: ...

    async def release(self, event_ids: Sequence[str]) -> None: ...


class MessageDeduper:
    """Remembers event ids derived from sender message ids for ``ttl_s`` (Redis ``SET NX EX``).

    Fails open: if Redis does not answer, messages are accepted (and counted);
    their deterministic event ids still let the worker drop repeats.
    """

    def __init__(self, redis: AnyRedis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = max(int(ttl_s), 86_400)

    @staticmethod
    def key(event_id: str) -> str:
        return keys.message_seen(event_id)

    async def claim(self, event_ids: Sequence[str]) -> list[bool]:
        """True for each id seen for the first time (now claimed), False for a repeat."""
        if not event_ids:
            return []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for eid in event_ids:
                    pipe.set(self.key(eid), b"1", nx=True, ex=self.ttl_s)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            metrics.DEDUPE_UNAVAILABLE.inc()
            log.warning("message de-duplication skipped, Redis unavailable: %r", exc)
            return [True] * len(event_ids)
        return [bool(r) for r in results]

    async def release(self, event_ids: Sequence[str]) -> None:
        """Forget claims whose events were not stored, so the sender's retry is accepted."""
        if not event_ids:
            return
        try:
            await self.redis.delete(*(self.key(e) for e in event_ids))
        except (RedisError, OSError) as exc:
            log.warning("could not release %d message-id claims: %r", len(event_ids), exc)
