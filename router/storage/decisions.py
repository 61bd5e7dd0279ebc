"""The decision log and the outcomes stream, read back for learning (issue 12.2).

Writing: the worker appends one record per crossing and per routing decision to
``lr:vectors`` (:func:`log_decision`, capped at :data:`keys.VECTORS_MAXLEN`); the
lifecycle appends won/lost training rows (and, since issue 12, accept/reject/convert
rows) to ``lr:outcomes``.  Reading: :func:`read_decisions` and :func:`read_outcomes`
page through the streams oldest first.  Forget deletes a person's entries of both
(router/worker/privacy.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from router.storage import keys
from router.storage.redis import AnyRedis

PAGE = 2000


async def log_decision(redis: AnyRedis, record: Mapping[str, Any]) -> str:
    """Append one decision record; returns its stream id."""
    entry: Any = await redis.xadd(keys.VECTORS, {"json": orjson.dumps(dict(record))},
                                  maxlen=keys.VECTORS_MAXLEN, approximate=True)
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def _read(redis: AnyRedis, stream: str, progress: Callable[[int], None] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    start = "-"
    while True:
        page: Any = await redis.xrange(stream, min=start, max="+", count=PAGE)
        for entry_id, fields in page:
            raw = fields.get(b"json", fields.get("json"))
            try:
                row = orjson.loads(raw)
            except (orjson.JSONDecodeError, TypeError):
                continue
            if isinstance(row, dict):
                row["_id"] = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                out.append(row)
        if progress is not None:
            progress(len(out))
        if len(page) < PAGE:
            return out
        last = page[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


async def read_decisions(redis: AnyRedis, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Every logged crossing and routing decision, oldest first."""
    return await _read(redis, keys.VECTORS, progress)


async def read_outcomes(redis: AnyRedis, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Every lifecycle outcome row (won, lost, accept, reject, convert), oldest first."""
    return await _read(redis, keys.OUTCOMES, progress)


_HISTORY_NAMES = {"accept": "accepted", "reject": "rejected", "convert": "converted", "won": "won", "lost": "lost"}


async def lifecycle_events(redis: AnyRedis, lead_ids: Sequence[str], outcome_rows: Sequence[Mapping[str, Any]] = (),
                           ) -> list[tuple[str, float, str]]:
    """``(lead_id, ts, what)`` for the leads' lifecycle steps: accepted, rejected, converted, won, lost.

    From each lead's history list (one pipelined round trip) and the won/lost rows of ``lr:outcomes``
    (which outlive a lead's history); the same step seen in both counts once.
    """
    seen: set[tuple[str, float, str]] = set()
    for row in outcome_rows:
        what = str(row.get("outcome", ""))
        if what in ("won", "lost"):
            seen.add((str(row.get("lead_id", "")), round(float(row.get("ts", 0.0) or 0.0), 3), what))
    unique = list(dict.fromkeys(lead_ids))
    for start in range(0, len(unique), PAGE):
        chunk = unique[start:start + PAGE]
        pipe = redis.pipeline(transaction=False)
        for lead_id in chunk:
            pipe.lrange(keys.history(lead_id), 0, -1)
        for lead_id, raw in zip(chunk, await pipe.execute(), strict=True):
            for item in raw or ():
                try:
                    entry = orjson.loads(item)
                except orjson.JSONDecodeError:
                    continue
                step = _HISTORY_NAMES.get(str(entry.get("action", "")))
                if step is not None:
                    seen.add((lead_id, round(float(entry.get("ts", 0.0) or 0.0), 3), step))
    return sorted(seen, key=lambda e: (e[1], e[0]))
