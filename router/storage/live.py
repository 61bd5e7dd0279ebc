"""The console's live feed and dead-letter list: two bounded Redis streams the worker and the sender write.

* :data:`keys.LIVE` (about ``LIVE_MAXLEN`` entries): what happens to leads and alerts as it happens.
  ``kind`` is one of :data:`KINDS`; every entry has ``ts`` and the ids it is about (``lead``, ``rep``,
  ``aid`` the assignment or alert id) and, by kind: ``crossing``/``held`` the ``trigger`` (a rule's
  label), ``score`` and ``team``; ``delivery`` the ``channel`` (slack_bot = the rep's Slack DM,
  slack_webhook = the team channel, email), ``status`` (:data:`STATUSES`), ``attempt`` and ``error``;
  ``replay`` the same plus ``who``.  The admin app pushes it to browsers (Server-Sent Events, the
  stream id as the event id, so a reconnect resumes with ``Last-Event-ID``).
* :data:`keys.DEAD_LETTERS` (about ``DEAD_LETTERS_MAXLEN``): each alert or digest that failed on a
  channel for good, with the very record the dead-letter topic got (sealed under the lead's data
  key, :mod:`router.storage.pii`), for the console's Replay; a replayed entry is deleted.

No entry holds a person's name or email (the console looks them up when it shows an entry, and
finds none for a forgotten lead); erasure XDELs the entries naming the lead
(:func:`forget_lead`).  Writing the feed never fails the caller: an error is logged and counted.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

from redis.exceptions import RedisError

from router.storage import keys
from router.storage.redis import AnyRedis

log = logging.getLogger(__name__)

Kind = Literal["crossing", "held", "alert", "delivery", "replay"]
KINDS: tuple[Kind, ...] = ("crossing", "held", "alert", "delivery", "replay")
Status = Literal["sent", "failed", "retrying", "queued"]
STATUSES: tuple[Status, ...] = ("sent", "failed", "retrying", "queued")
STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
MAX_ERROR = 300


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


def lead_of_alert_id(aid: str) -> str:
    """The lead id an alert id starts with ("L…:3", "L…:3:remind"), or ''."""
    head = aid.split(":", 1)[0]
    return head if re.fullmatch(r"[LAU][0-9a-f]{24}", head) else ""


class LiveFeed:
    """Writes and reads the live stream and the dead-letter stream."""

    def __init__(self, redis: AnyRedis, *, maxlen: int = keys.LIVE_MAXLEN,
                 dead_maxlen: int = keys.DEAD_LETTERS_MAXLEN) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self.dead_maxlen = dead_maxlen

    # --- writing (never raises) ---------------------------------------------------------------

    async def note(self, kind: Kind, *, lead: str = "", rep: str = "", aid: str = "", now: float | None = None,
                   **extra: object) -> str | None:
        """Append one entry; the stream id, or None when Redis failed (logged)."""
        fields: dict[str, str] = {"kind": kind, "ts": repr(time.time() if now is None else now), "lead": lead,
                                  "rep": rep, "aid": aid}
        for k, v in extra.items():
            if v is not None and v != "":
                fields[k] = str(v)[:MAX_ERROR]
        try:
            entry_id = await self.redis.xadd(keys.LIVE, fields,  # type: ignore[arg-type]
                                             maxlen=self.maxlen, approximate=True)
        except RedisError as exc:
            log.warning("live feed: could not record a %s entry (%r); the console misses it", kind, exc)
            return None
        return _s(entry_id)

    async def delivery(self, *, aid: str, rep: str, channel: str, status: Status, attempt: int = 0,
                       error: str | None = None, lead: str = "", now: float | None = None) -> str | None:
        return await self.note("delivery", lead=lead or lead_of_alert_id(aid), rep=rep, aid=aid, channel=channel,
                               status=status, attempt=attempt or None, error=error, now=now)

    async def dead_letter(self, record: bytes, *, aid: str, rep: str, channel: str, kind: str, error: str | None,
                          attempts: int, lead: str = "", now: float | None = None) -> str | None:
        """Keep one dead-lettered record (already sealed) for the console's Replay."""
        fields = {"ts": repr(time.time() if now is None else now), "aid": aid, "lead": lead or lead_of_alert_id(aid),
                  "rep": rep, "channel": channel, "kind": kind, "error": (error or "")[:MAX_ERROR],
                  "attempts": str(attempts), "record": record.decode(errors="replace")}
        try:
            entry_id = await self.redis.xadd(keys.DEAD_LETTERS, fields,  # type: ignore[arg-type]
                                             maxlen=self.dead_maxlen, approximate=True)
        except RedisError as exc:
            log.warning("dead letters: could not keep %s on %s for the console (%r); the topic has it", aid,
                        channel, exc)
            return None
        return _s(entry_id)

    # --- reading ------------------------------------------------------------------------------------

    async def tail(self, limit: int) -> list[tuple[str, dict[str, str]]]:
        """The newest ``limit`` entries, oldest first."""
        raw: Any = await self.redis.xrevrange(keys.LIVE, count=limit)
        return [(_s(i), decode(f)) for i, f in reversed(raw)]

    async def after(self, last_id: str, limit: int) -> list[tuple[str, dict[str, str]]]:
        """Entries after stream id ``last_id`` (exclusive), oldest first."""
        raw: Any = await self.redis.xrange(keys.LIVE, min=f"({last_id}", max="+", count=limit)
        return [(_s(i), decode(f)) for i, f in raw]

    async def wait(self, last_id: str, block_ms: int, limit: int) -> list[tuple[str, dict[str, str]]]:
        """Entries after ``last_id`` ('$': only new ones), waiting up to ``block_ms`` for the first."""
        raw: Any = await self.redis.xread({keys.LIVE: last_id}, count=limit, block=block_ms)
        out: list[tuple[str, dict[str, str]]] = []
        for _stream, rows in raw or []:
            out += [(_s(i), decode(f)) for i, f in rows]
        return out

    async def last_id(self) -> str:
        """The newest entry's id ('0-0' for an empty stream)."""
        raw: Any = await self.redis.xrevrange(keys.LIVE, count=1)
        return _s(raw[0][0]) if raw else "0-0"

    async def dead(self, limit: int) -> list[tuple[str, dict[str, str]]]:
        """The newest dead letters, newest first."""
        raw: Any = await self.redis.xrevrange(keys.DEAD_LETTERS, count=limit)
        return [(_s(i), decode(f)) for i, f in raw]

    async def dead_one(self, entry_id: str) -> dict[str, str] | None:
        if not STREAM_ID.match(entry_id):
            return None
        raw: Any = await self.redis.xrange(keys.DEAD_LETTERS, min=entry_id, max=entry_id, count=1)
        return decode(raw[0][1]) if raw else None

    async def dead_done(self, entry_id: str) -> int:
        return int(await self.redis.xdel(keys.DEAD_LETTERS, entry_id))


async def forget_lead(redis: AnyRedis, lead_id: str, page: int = 1000) -> int:
    """Erasure: XDEL every live and dead-letter entry that names the lead; how many went."""
    deleted = 0
    for stream in (keys.LIVE, keys.DEAD_LETTERS):
        start = "-"
        while True:
            rows: Any = await redis.xrange(stream, min=start, max="+", count=page)
            if not rows:
                break
            hits = [_s(i) for i, f in rows if decode(f).get("lead") == lead_id]
            if hits:
                deleted += await redis.xdel(stream, *hits)
            if len(rows) < page:
                break
            start = "(" + _s(rows[-1][0])
    return deleted
