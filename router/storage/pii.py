"""Personal data at rest: keyed hashes, pseudonyms and per-person data keys (crypto-shredding).

What the service keeps outside Redis (the collector's spool, the Kafka topics) cannot be
edited when a person asks to be forgotten, so personal data goes there only encrypted:

* Every person (an email) has a **data key**: 256 random bits, made on first use and kept
  in Redis at ``lr:{P:<subject>}:dk``, wrapped (AES-GCM) with a key derived from
  ``LEADROUTER_PII_KEY``.  ``subject`` is an HMAC of the normalised email under that
  master key: neither the email nor a plain digest of it, so it cannot be looked up
  from a guessed address without the key.
* The collector **seals** an identified event's personal fields
  (:data:`models.events.PERSONAL_FIELDS`: email, URLs, page title, UTM, form fields,
  traits, user agent, IP) with the person's key before the event touches the spool;
  the worker opens them.  Alerts on the assignments and dead-letter topics are sealed
  the same way (each account member named in an alert under that member's own key).
* ``leadrouter forget`` deletes the data key and leaves a **tombstone**
  ``lr:{P:<subject>}:gone``: every copy left in the spool, in Kafka or in a backup
  becomes unreadable, and the collector and the worker drop the person's later events.
* Visitor, user and alias ids are replaced by keyed **pseudonyms** at the collector, so
  a browser's cookie value never leaves it; and every IP is truncated (IPv4 to /24,
  IPv6 to /48) once the machine check has used the full address.

When Redis does not answer at the collector (a restart), an identified event is sealed under an
*escrow* key derived from the master key instead (``e1.``), so nothing is stored in the clear and no
hit is refused; the worker still drops it if the person was forgotten, but ``forget`` cannot shred
those copies: they stay readable to whoever holds the master key until Kafka's retention drops them.

Anonymous events (no email) keep their pseudonymous visitor id, truncated IP, user agent
and page URL in the clear: nothing in them names a person, and once the person who
identified on that browser is forgotten nothing links the pseudonym to them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from models import Event
from models.events import PERSONAL_FIELDS
from router.settings import TokenSettings
from router.storage import keys
from router.storage.kafka import ProduceError
from router.storage.redis import AnyRedis
from router.storage.scripts import execute, queue, register

SEAL_PREFIX = "s1."
ESCROW_PREFIX = "e1."  # sealed under the escrow key: Redis did not answer at the collector
PSEUDONYM_PREFIX = "p1"
KeyStatus = Literal["ok", "gone", "none"]

log = logging.getLogger(__name__)


class PiiKeysUnavailable(ProduceError):
    """Redis did not answer for data keys: an event with personal data cannot be stored sealed."""


class SealError(ProduceError):
    """A sealed value does not open: tampered with, or sealed under another master key."""


def _derive(master: bytes, label: bytes) -> bytes:
    return hmac.new(master, label, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Per-process caches of pure answers (a visitor's address and id repeat on every hit); bounded, so a
# flood of distinct values only evicts.
CACHE_SIZE = 16_384


@functools.lru_cache(maxsize=CACHE_SIZE)
def truncate_ip(ip: str | None) -> str | None:
    """IPv4 to its /24, IPv6 to its /48; anything else is dropped."""
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(addr) & ~0xFF))  # its /24
    return str(ipaddress.IPv6Address(int(addr) & ~((1 << 80) - 1)))  # its /48


@dataclass(frozen=True, slots=True)
class DataKey:
    subject: str
    status: KeyStatus
    key: bytes | None = None


def pseudonym(master: str, identifier: str) -> str:
    """:meth:`Vault.pseudonym` without a Redis client (tests, tools)."""
    return _pseudonym(_derive(master.encode(), _PSEUDONYM_LABEL), identifier)


def _pseudonym(key: bytes | hmac.HMAC, identifier: str) -> str:
    """``key``: the pseudonym key, or an HMAC already keyed with it (copied: cheaper than keying anew)."""
    mac = key.copy() if isinstance(key, hmac.HMAC) else hmac.new(key, digestmod=hashlib.sha256)
    mac.update(identifier.encode())
    return PSEUDONYM_PREFIX + mac.hexdigest()[:32]


_PSEUDONYM_LABEL = b"leadrouter/pii/pseudonym/v1"


class Vault:
    """The master-key operations and the per-person key store (one Lua call per person, pipelined)."""

    def __init__(self, redis: AnyRedis, master: str) -> None:
        raw = master.encode()
        self.redis = redis
        self._subject_key = _derive(raw, b"leadrouter/pii/subject/v1")
        self._pseudonym_key = _derive(raw, _PSEUDONYM_LABEL)
        self._wrap = AESGCM(_derive(raw, b"leadrouter/pii/wrap/v1"))
        self._escrow = _derive(raw, b"leadrouter/pii/escrow/v1")
        self._script = register(redis, "pii_key.lua")
        self._shred = register(redis, "pii_shred.lua")
        self._pseudonym_mac = hmac.new(self._pseudonym_key, digestmod=hashlib.sha256)
        self._pseudonyms: dict[str, str] = {}  # identifier -> pseudonym, at most CACHE_SIZE (oldest out)

    @classmethod
    def from_settings(cls, redis: AnyRedis, tokens: TokenSettings) -> Vault:
        master, _ = tokens.pii_master()
        return cls(redis, master)

    # --- keyed hashes ---------------------------------------------------------
    def subject(self, email: str) -> str:
        """The person's keyed hash: their key's and tombstone's name."""
        normal = keys.normalise_email(email).encode()
        return hmac.new(self._subject_key, normal, hashlib.sha256).hexdigest()[:32]

    def lead_subject(self, lead_id: str) -> str:
        """The key name for a lead known by no email (alerts of user-id leads)."""
        return hmac.new(self._subject_key, f"lead:{lead_id}".encode(), hashlib.sha256).hexdigest()[:32]

    def pseudonym(self, identifier: str) -> str:
        """A visitor, user or alias id as the rest of the service sees it (stable, keyed, one-way)."""
        cache = self._pseudonyms
        out = cache.get(identifier)
        if out is None:
            out = _pseudonym(self._pseudonym_mac, identifier)
            if len(cache) >= CACHE_SIZE:
                del cache[next(iter(cache))]
            cache[identifier] = out
        return out

    # --- the key store ----------------------------------------------------------
    async def data_keys(self, subjects: Iterable[str], *, create: bool) -> dict[str, DataKey]:
        """Each subject's key: made when missing if ``create`` (unless forgotten); one round trip."""
        wanted = sorted(set(subjects))
        if not wanted:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for subject in wanted:
            fresh = self._wrap_key(subject, os.urandom(32)) if create else b""
            await queue(pipe, self._script, keys=[keys.pii_key(subject), keys.pii_gone(subject)], args=[fresh])
        try:
            replies = await execute(pipe)
        except Exception as exc:  # a timeout, a refused connection, a failover
            msg = f"the data-key store (Redis) did not answer ({exc!r}); check REDIS_URL and that Redis is up"
            raise PiiKeysUnavailable(msg) from exc
        finally:
            await pipe.reset()  # type: ignore[no-untyped-call]
        out: dict[str, DataKey] = {}
        for subject, reply in zip(wanted, replies, strict=True):
            status = _text(reply[0])
            if status == "ok":
                out[subject] = DataKey(subject, "ok", self._unwrap_key(subject, bytes(reply[1])))
            else:
                out[subject] = DataKey(subject, "gone" if status == "gone" else "none")
        return out

    async def shred(self, subject: str, now: float) -> bool:
        """Delete the person's data key and leave the tombstone; True when a key existed."""
        deleted = await self._shred(keys=[keys.pii_key(subject), keys.pii_gone(subject)], args=[repr(now)])
        return bool(deleted)

    async def forgotten(self, subjects: Iterable[str]) -> set[str]:
        wanted = sorted(set(subjects))
        if not wanted:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for subject in wanted:
            pipe.exists(keys.pii_gone(subject))
        return {s for s, n in zip(wanted, await execute(pipe), strict=True) if n}

    def _wrap_key(self, subject: str, key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._wrap.encrypt(nonce, key, subject.encode())

    def _unwrap_key(self, subject: str, wrapped: bytes) -> bytes:
        try:
            return self._wrap.decrypt(wrapped[:12], wrapped[12:], subject.encode())
        except (InvalidTag, ValueError) as exc:
            msg = (f"the data key of subject {subject} does not unwrap: LEADROUTER_PII_KEY differs from the one "
                   "that made it; give the collector, the worker and the CLI the same LEADROUTER_PII_KEY")
            raise SealError(msg) from exc

    # --- sealing ----------------------------------------------------------------
    @staticmethod
    def seal(key: bytes, subject: str, payload: Mapping[str, Any]) -> str:
        nonce = os.urandom(12)
        return SEAL_PREFIX + _b64(nonce + AESGCM(key).encrypt(nonce, orjson.dumps(payload), subject.encode()))

    @staticmethod
    def unseal(key: bytes, subject: str, sealed: str) -> dict[str, Any]:
        if not sealed.startswith(SEAL_PREFIX):
            msg = f"sealed value has no {SEAL_PREFIX!r} prefix; it was not written by this service"
            raise SealError(msg)
        try:
            raw = _unb64(sealed[len(SEAL_PREFIX):])
            data = orjson.loads(AESGCM(key).decrypt(raw[:12], raw[12:], subject.encode()))
        except (InvalidTag, ValueError, orjson.JSONDecodeError) as exc:
            msg = f"sealed value of subject {subject} does not open ({type(exc).__name__}): altered or mis-keyed"
            raise SealError(msg) from exc
        if not isinstance(data, dict):
            msg = f"sealed value of subject {subject} is not an object"
            raise SealError(msg)
        return data

    # --- events -----------------------------------------------------------------
    def pseudonymise(self, event: Event) -> Event:
        """Ids replaced by pseudonyms and the IP truncated: what every event looks like past the collector."""
        return replace(
            event,
            visitor_id=self.pseudonym(event.visitor_id) if event.visitor_id else None,
            user_id=self.pseudonym(event.user_id) if event.user_id else None,
            previous_id=self.pseudonym(event.previous_id) if event.previous_id else None,
            ip=truncate_ip(event.ip),
        )

    async def protect(self, events: Sequence[Event]) -> tuple[list[Event], list[Event]]:
        """(events to store, events of forgotten people to drop): pseudonymised, and sealed when identified.

        Raises :class:`PiiKeysUnavailable` when an event names an email and Redis does not answer:
        such an event is never stored in the clear.
        """
        out = [self.pseudonymise(e) for e in events]
        subjects = {i: self.subject(e.email) for i, e in enumerate(out) if e.email and not e.sealed}
        if not subjects:
            return out, []
        found = await self.data_keys(subjects.values(), create=True)
        kept: list[Event] = []
        dropped: list[Event] = []
        for i, event in enumerate(out):
            subject = subjects.get(i)
            if subject is None:
                kept.append(event)
                continue
            dk = found[subject]
            if dk.key is None:
                dropped.append(event)
                continue
            kept.append(self.seal_event(event, subject, dk.key))
        return kept, dropped

    def seal_event(self, event: Event, subject: str, key: bytes, *, escrow: bool = False) -> Event:
        data = event.to_dict()
        payload = {name: data[name] for name in PERSONAL_FIELDS if data.get(name)}
        cleared: dict[str, Any] = {name: _empty(name) for name in PERSONAL_FIELDS}
        sealed = self.seal(key, subject, payload)
        if escrow:
            sealed = ESCROW_PREFIX + sealed[len(SEAL_PREFIX):]
        return replace(event, subject=subject, sealed=sealed, **cleared)

    def protect_in_escrow(self, events: Sequence[Event]) -> list[Event]:
        """:meth:`protect` without Redis (it did not answer): identified events sealed under the escrow
        key, derived from the master key.  Nothing is stored in the clear and nothing is refused, but
        these copies are not shredded by ``forget`` (the worker still drops a forgotten person's)."""
        out = [self.pseudonymise(e) for e in events]
        return [self.seal_event(e, self.subject(e.email), self._escrow, escrow=True) if e.email and not e.sealed
                else e for e in out]

    async def open(self, events: Sequence[Event]) -> tuple[list[Event], list[Event]]:
        """(events to process, events to drop): sealed events opened with their person's key; any
        event of a forgotten person (sealed or not) dropped.  One Redis round trip."""
        subjects: dict[int, str] = {}
        for i, e in enumerate(events):
            if e.sealed and e.subject:
                subjects[i] = e.subject
            elif e.email:
                subjects[i] = self.subject(e.email)
        if not subjects:
            return list(events), []
        found = await self.data_keys(subjects.values(), create=False)
        kept: list[Event] = []
        dropped: list[Event] = []
        for i, event in enumerate(events):
            subject = subjects.get(i)
            if subject is None:
                kept.append(event)
                continue
            dk = found[subject]
            escrowed = bool(event.sealed and event.sealed.startswith(ESCROW_PREFIX))
            if dk.status == "gone" or (event.sealed and not escrowed and dk.key is None):
                if dk.status != "gone":  # not forgotten, yet its key is missing: Redis lost a write
                    log.error("event %s of subject %s is sealed under a data key Redis no longer has (a restart "
                              "that lost recent writes?); it cannot be opened and is dropped", event.event_id, subject)
                dropped.append(event)
                continue
            if not event.sealed:
                kept.append(event)
                continue
            try:
                if escrowed:
                    payload = self.unseal(self._escrow, subject, SEAL_PREFIX + event.sealed[len(ESCROW_PREFIX):])
                else:
                    assert dk.key is not None
                    payload = self.unseal(dk.key, subject, event.sealed)
            except SealError:
                dropped.append(event)
                continue
            opened = Event.from_dict({**event.to_dict(), **payload, "sealed": None, "subject": subject})
            kept.append(opened)
        return kept, dropped

    # --- alerts -----------------------------------------------------------------
    def alert_subject(self, lead: Mapping[str, Any], lead_id: str) -> str:
        email = lead.get("email")
        return self.subject(str(email)) if isinstance(email, str) and "@" in email else self.lead_subject(lead_id)

    async def seal_alert(self, alert: Mapping[str, Any]) -> dict[str, Any] | None:
        """An alert record as it goes to Kafka: the whole alert under the lead's key, each account member
        under their own.  None when the lead was forgotten meanwhile (nothing to send)."""
        asg = alert.get("assignment") or {}
        lead_id = str(asg.get("lead_id", ""))
        subject = self.alert_subject(alert.get("lead") or {}, lead_id)
        body = dict(alert)
        account = dict(body.get("account") or {})
        members = list(account.get("members") or [])
        member_subjects = [self.subject(str(m.get("email"))) if "@" in str(m.get("email", "")) else ""
                           for m in members]
        found = await self.data_keys([subject, *filter(None, member_subjects)], create=True)
        own = found[subject]
        if own.key is None:
            return None
        if members:
            sealed_members: list[dict[str, Any]] = []
            for member, ms in zip(members, member_subjects, strict=True):
                mk = found.get(ms) if ms else own
                if mk is None or mk.key is None:
                    continue  # a forgotten colleague is left out
                sealed_members.append({"subject": mk.subject, "sealed": self.seal(mk.key, mk.subject, member)})
            account["members"] = sealed_members
            body["account"] = account
        # Nothing in the clear names the lead: not even its id (a plain digest of the email).
        return {"v": 2, "subject": subject, "sealed": self.seal(own.key, subject, body)}

    async def open_alert(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """The alert dict of a sealed record; None when its lead was forgotten (the record is dropped)."""
        subject = str(record.get("subject", ""))
        sealed = str(record.get("sealed", ""))
        own = (await self.data_keys([subject], create=False))[subject]
        if own.key is None:
            return None
        body = self.unseal(own.key, subject, sealed)
        account = dict(body.get("account") or {})
        members = [m for m in account.get("members") or [] if isinstance(m, dict)]
        if members:
            found = await self.data_keys([str(m.get("subject", "")) for m in members], create=False)
            opened: list[dict[str, Any]] = []
            for m in members:
                mk = found.get(str(m.get("subject", "")))
                if mk is not None and mk.key is not None:
                    opened.append(self.unseal(mk.key, mk.subject, str(m.get("sealed", ""))))
            account["members"] = opened
            body["account"] = account
        return body


def is_sealed_alert(record: Mapping[str, Any]) -> bool:
    return record.get("v") == 2 and "sealed" in record and "subject" in record


_MAPS = frozenset({"utm", "fields", "traits"})


def _empty(name: str) -> Any:
    return {} if name in _MAPS else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
