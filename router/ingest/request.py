"""What a collector request carries, read safely: client address, privacy signals, form fields and bodies.

Pure helpers over :class:`aiohttp.web.Request` shared by the handlers (:mod:`router.ingest.handlers`):
the answers every pixel gives (the 43-byte GIF), the visitor cookie's id, the client address
(``X-Forwarded-For`` only from trusted proxies), form-field parsing with problems that name the
field, and request bodies decoded by us, bounded as they stream (:func:`read_limited`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from router.errors import SettingsError
from router.ingest.machine import network_of, parse_ip
from router.ingest.segment import (
    FORM_ID_RE,
    MAX_FIELD,
    IngestError,
    check_encoding,
    valid_email,
)
from router.settings import Network
from scoring.trust import parse_domain_list

log = logging.getLogger(__name__)

# The classic 1x1 transparent GIF: 43 bytes.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
GIF_HEADERS = {
    "Content-Type": "image/gif",
    "Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
MAX_FORM_BYTES = 64 * 1024
VISITOR_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
FORM_TEXT_FIELDS = ("first_name", "last_name", "name", "company", "job_title", "country", "region", "phone")
# A form's other questions ("What is your occupation?") posted as ``answer.<name>``: kept on the lead as
# field ``<name>`` (the feature catalogue's ``form:<name>``), at most MAX_ANSWERS of them.
ANSWER_PREFIX = "answer."
ANSWER_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_ANSWERS = 20
TRUE_WORDS = {"1", "true", "yes", "on", "y"}
FALSE_WORDS = {"0", "false", "no", "off", "n", ""}
SPOOL_FULL = "spool_full"
INVALID_LINK_PAGE = (
    "This link is invalid or has expired.\n\n"
    "It may have been copied incompletely from the email. Open the link from the original email again.\n"
)


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    value: Any
    problem: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "value": _echo(self.value), "problem": self.problem, "fix": self.fix}


MAX_ECHO_BYTES = 512


def _echo(value: Any) -> Any:
    """``value`` as a 422 may show it: as sent when it serialises to a short JSON value, else a note."""
    try:
        size = len(orjson.dumps(value))
    except (orjson.JSONEncodeError, TypeError):
        return f"(a {type(value).__name__} that cannot be shown)"
    if size <= MAX_ECHO_BYTES:
        return value
    if isinstance(value, str):
        return value[:40] + "…"
    return f"(a {type(value).__name__} of {size} bytes, not shown)"


def load_disposable_domains(path: str) -> frozenset[str]:
    """The disposable email domains of LEADROUTER_DISPOSABLE_DOMAINS_FILE ("" = the shipped list)."""
    if not path:
        return parse_domain_list(resources.files("router.ingest").joinpath("disposable_domains.txt").read_text())
    try:
        return parse_domain_list(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        msg = (f"setting LEADROUTER_DISPOSABLE_DOMAINS_FILE={path!r} cannot be read ({exc}); point it at a text "
               "file with one domain a line, or unset it to use the shipped list")
        raise SettingsError(msg) from None


def honeypot_filled(data: Mapping[str, Any], names: Sequence[str]) -> bool:
    """A hidden honeypot field (LEADROUTER_FORM_HONEYPOT_FIELDS) came back with a value."""
    for name in names:
        value = data.get(name)
        if value is not None and value != "" and not (isinstance(value, str) and not value.strip()):
            return True
    return False


def new_visitor_id() -> str:
    """32 random hex characters (128 bits from the OS, as ``uuid4().hex`` minus its fixed bits)."""
    return os.urandom(16).hex()


def new_event_id() -> str:
    """An event's id: 32 random hex characters, like :func:`new_visitor_id`."""
    return os.urandom(16).hex()


def cookie_value(request: web.Request, name: str) -> str | None:
    """``request.cookies.get(name)`` without parsing every cookie into a Morsel: a header with no
    quoted value is split here (the same answer: the last ``name=`` wins, spaces stripped); any
    other goes to aiohttp's RFC 6265 parser."""
    header = request.headers.get("Cookie")
    if not header or name not in header:
        return None
    if '"' in header:
        return request.cookies.get(name)
    found = None
    for part in header.split(";"):
        key, _, value = part.partition("=")
        if key.strip() == name:  # a bare "name" is an empty value, as aiohttp reads it
            found = value.strip()
    return found


def privacy_signal(request: web.Request) -> str | None:
    """``dnt`` or ``gpc`` when the browser asks not to be tracked."""
    if request.headers.get("DNT", "").strip() == "1":
        return "dnt"
    if request.headers.get("Sec-GPC", "").strip() == "1":
        return "gpc"
    return None


# Parsed addresses and proxy verdicts, per process: a visitor's address repeats on every hit, and
# parsing one with ``ipaddress`` costs more than the rest of its client_ip lookup.  Bounded LRUs, so
# a flood of distinct (or junk) values only evicts; the answers are pure functions of their input.
IP_CACHE_SIZE = 16_384


@functools.lru_cache(maxsize=IP_CACHE_SIZE)
def _valid_ip(value: str | None) -> str | None:
    addr = parse_ip(value)
    return str(addr) if addr is not None else None


@functools.lru_cache(maxsize=IP_CACHE_SIZE)
def _is_trusted(ip: str, trusted_proxies: tuple[Network, ...]) -> bool:
    return network_of(ip, trusted_proxies) is not None


def client_ip(request: web.Request, trusted_proxies: Sequence[Network] = ()) -> str | None:
    """The client's address, always a valid IP address (or None when the peer has none).

    ``X-Forwarded-For`` is believed only when the direct peer is in ``trusted_proxies``
    (LEADROUTER_TRUSTED_PROXIES): then the right-most listed address that is not itself a
    trusted proxy is the client's.  Anything else in the header is the client's own say and
    ignored; an entry that is not an IP address where the client's should be falls back to
    the peer address.
    """
    peer = _valid_ip(request.remote)
    trusted = tuple(trusted_proxies)
    if peer is None or not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for line in request.headers.getall("X-Forwarded-For", ()) for hop in line.split(",")]
    client = peer
    for hop in reversed(hops):
        addr = _valid_ip(hop)
        if addr is None:
            return peer
        client = addr
        if not _is_trusted(addr, trusted):
            return addr
    return client  # every hop is a trusted proxy: the first one is the client


def parse_form(data: Mapping[str, Any]) -> tuple[dict[str, str], list[Problem]]:
    """Validate a form post; returns the clean fields and every problem found."""
    problems: list[Problem] = []
    out: dict[str, str] = {}
    form_id = data.get("form_id")
    if not isinstance(form_id, str) or not form_id.strip():
        problems.append(Problem("form_id", form_id, "missing", "send the id of the form, e.g. form_id=demo-request"))
    elif not FORM_ID_RE.match(form_id.strip()):
        problems.append(Problem("form_id", form_id, "invalid",
                                "use 1-64 letters, digits, '-', '_', '.' or ':'"))
    else:
        out["form_id"] = form_id.strip()
    email = data.get("email")
    if not isinstance(email, str) or not email.strip():
        problems.append(Problem("email", email, "missing", "send the person's work email, e.g. email=jane@acme.com"))
    elif not valid_email(email.strip()):
        problems.append(Problem("email", email, "not a valid email address",
                                "send an address like jane@acme.com"))
    else:
        out["email"] = email.strip().lower()
    for name in FORM_TEXT_FIELDS:
        value = data.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            problems.append(Problem(name, value, "must be text", f"send {name} as a string"))
            continue
        value = value.strip()
        if len(value) > MAX_FIELD:
            problems.append(Problem(name, value[:40] + "…", f"longer than {MAX_FIELD} characters",
                                    f"shorten {name}"))
            continue
        if name in ("country", "region") and len(value) <= 3:
            value = value.upper()
        if value:
            out[name] = value
    answers = [k for k in data if isinstance(k, str) and k.startswith(ANSWER_PREFIX)]
    if len(answers) > MAX_ANSWERS:
        problems.append(Problem("answer.*", len(answers), f"more than {MAX_ANSWERS} answers",
                                f"send at most {MAX_ANSWERS} answer.<name> fields"))
        answers = []
    for key in answers:
        name, value = key[len(ANSWER_PREFIX):], data.get(key)
        if not ANSWER_NAME_RE.match(name) or name in FORM_TEXT_FIELDS or name in ("email", "form_id", "consent"):
            problems.append(Problem(key[:80], value if isinstance(value, str) else None, "not an answer name",
                                    "name answers answer.<name> with 1-64 lower-case letters, digits or '_', "
                                    "and send profile fields (email, country ...) under their own names"))
            continue
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            problems.append(Problem(key, value, "must be text", f"send {key} as a string"))
            continue
        value = " ".join(value.split())
        if len(value) > MAX_FIELD:
            problems.append(Problem(key, value[:40] + "…", f"longer than {MAX_FIELD} characters", f"shorten {key}"))
            continue
        if value:
            out[name] = value
    consent = data.get("consent")
    if consent is not None:
        word = str(consent).strip().lower()
        if word in TRUE_WORDS:
            out["consent"] = "true"
        elif word in FALSE_WORDS:
            out["consent"] = "false"
        else:
            problems.append(Problem("consent", consent, "not a yes/no value", "send consent=true or consent=false"))
    return out, problems




# Compressed bytes may exceed the decoded limit by a little (headers, incompressible data), no more.
COMPRESSED_SLACK = 1024


class BodyDecoder:
    """Decodes a request body as it streams in, refusing (413) more than ``limit`` decoded bytes.

    The collector's aiohttp server does not decompress (``auto_decompress=False``): only a
    handler that reads a body decodes it, here, never producing more than ``limit + 1`` bytes
    whatever the compression ratio.  ``gzip``/``x-gzip`` (several members allowed) and
    ``deflate`` (zlib-wrapped, or raw as some clients send it); a stream that ends early or
    carries data after its end is a 400.
    """

    def __init__(self, encoding: str, limit: int, too_large: IngestError) -> None:
        self.encoding = encoding
        self.limit = limit
        self.too_large = too_large
        self.raw = 0
        self.buf = bytearray()
        self._inflater: Any = None  # zlib's decompress object for the current stream/member

    def feed(self, chunk: bytes) -> None:
        self.raw += len(chunk)
        if not self.encoding:
            self.buf += chunk
            if len(self.buf) > self.limit:
                raise self.too_large
            return
        if self.raw > self.limit + COMPRESSED_SLACK:
            raise self.too_large
        data = chunk
        while data:
            if self._inflater is None or self._inflater.eof:
                if self._inflater is not None and self.encoding != "gzip":
                    raise IngestError(400, "invalid_encoding", "the body has data after the end of its deflate stream")
                self._inflater = _inflater(self.encoding, data)
            self.buf += self._inflater.decompress(data, self.limit - len(self.buf) + 1)
            if len(self.buf) > self.limit:
                raise self.too_large
            data = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail

    def finish(self) -> bytes:
        if self.encoding and self._inflater is not None and not self._inflater.eof:
            raise IngestError(400, "invalid_encoding",
                              f"the {self.encoding} body is truncated: it ends before its compressed stream does")
        return bytes(self.buf)


def _inflater(encoding: str, first: bytes) -> Any:
    if encoding == "gzip":
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    # RFC 1950 (zlib) says "deflate"; some clients send a raw RFC 1951 stream instead.
    return zlib.decompressobj(wbits=zlib.MAX_WBITS if first[0] & 0x0F == 8 else -zlib.MAX_WBITS)


def body_timeout_error(timeout_s: float) -> IngestError:
    return IngestError(408, "body_timeout",
                       f"the request body did not arrive within {timeout_s:g} s; send the whole body at once")


async def read_limited(request: web.Request, limit: int, what: str, timeout_s: float = 0.0) -> bytes:
    """The decoded body, refusing (413) more than ``limit`` decoded bytes whether or not
    Content-Length says so, as soon as the decoded size passes it (see :class:`BodyDecoder`);
    408 when the body takes longer than ``timeout_s`` (0: no limit) to arrive."""
    encoding = check_encoding(request.headers.get("Content-Encoding"))
    too_large = IngestError(413, "payload_too_large", f"{what} is limited to {limit // 1024} KB ({limit} bytes)")
    if request.content_length is not None and request.content_length > limit + (COMPRESSED_SLACK if encoding else 0):
        raise too_large
    decoder = BodyDecoder(encoding, limit, too_large)
    try:
        async with asyncio.timeout(timeout_s if timeout_s > 0 else None):
            async for chunk in request.content.iter_chunked(64 * 1024):
                decoder.feed(chunk)
        return decoder.finish()
    except IngestError:
        raise
    except TimeoutError:
        raise body_timeout_error(timeout_s) from None
    except Exception as exc:  # zlib: not really gzip/deflate; aiohttp: the body ended early, ...
        raise IngestError(400, "invalid_encoding", f"the body could not be decoded: {exc}") from None
