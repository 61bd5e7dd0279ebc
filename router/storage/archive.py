"""The event archive: every accepted event, kept beyond Kafka's retention for backtests and model training.

Layout (``LEADROUTER_ARCHIVE_DIR``, default ``var/archive``; any mounted path)::

    <dir>/events/2026-12-02/<host>-<pid>.jsonl.gz

One folder per UTC day of the event's ``ts``; one file per writing worker
process, so workers never write the same file.  Each batch is appended as its
own gzip member (a gzip file may hold several), so a file is readable at
every moment, and a worker killed mid-write loses at most the tail it was
writing: readers stop at a damaged member and say so.  Lines are the events
exactly as they were on the Kafka topic (``models.Event`` JSON).

Kafka delivers at least once, so an event may be archived twice: readers
drop repeats by ``event_id``.  Day folders older than
``LEADROUTER_ARCHIVE_RETENTION_DAYS`` are deleted by the writers.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import socket
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

from models import Event, InvalidEventError
from router.errors import RouterError

log = logging.getLogger(__name__)

EVENTS = "events"
SUFFIX = ".jsonl.gz"


class ArchiveError(RouterError):
    """The archive could not be written or read."""


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def default_writer_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid()}"


class ArchiveWriter:
    """Appends batches of raw event JSON to the day files of one writer."""

    def __init__(self, root: Path, *, writer_id: str | None = None, retention_days: int = 0) -> None:
        self.root = root
        self.events_dir = root / EVENTS
        self.writer_id = writer_id or default_writer_id()
        self.retention_days = retention_days
        self._pruned_on = ""

    def path_for(self, day: str) -> Path:
        return self.events_dir / day / f"{self.writer_id}{SUFFIX}"

    def append(self, raws: Sequence[bytes], now: float | None = None) -> int:
        """Archive raw event JSON (invalid lines are skipped); returns how many were written."""
        by_day: dict[str, list[bytes]] = {}
        for raw in raws:
            try:
                data = orjson.loads(raw)
                ts = float(data["ts"])
                day = day_of(ts)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError, OSError):
                continue
            by_day.setdefault(day, []).append(bytes(raw).rstrip(b"\n"))
        written = 0
        for day, lines in by_day.items():
            path = self.path_for(day)
            path.parent.mkdir(parents=True, exist_ok=True)
            member = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6, mtime=0)
            with path.open("ab") as fh:
                fh.write(member)
            written += len(lines)
        today = day_of(now) if now is not None else datetime.now(UTC).strftime("%Y-%m-%d")
        if self.retention_days > 0 and today != self._pruned_on:
            self._pruned_on = today
            self.prune(today)
        return written

    def prune(self, today: str) -> list[str]:
        """Delete day folders older than the retention; returns the days deleted."""
        cutoff = (date.fromisoformat(today) - timedelta(days=self.retention_days)).isoformat()
        gone: list[str] = []
        if not self.events_dir.is_dir():
            return gone
        for folder in sorted(self.events_dir.iterdir()):
            if folder.is_dir() and _is_day(folder.name) and folder.name < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(folder.name)
        if gone:
            log.info("archive: deleted %d day folders older than %s", len(gone), cutoff)
        return gone


def _is_day(name: str) -> bool:
    try:
        date.fromisoformat(name)
    except ValueError:
        return False
    return len(name) == 10


def read_members(path: Path) -> Iterator[bytes]:
    """The lines of a multi-member gzip file; a damaged or cut tail ends the file (logged)."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(data[offset:])
        except zlib.error as exc:
            log.warning("archive file %s is damaged at byte %d (%s); read what came before", path, offset, exc)
            return
        if not inflater.eof:
            log.warning("archive file %s ends in a cut member at byte %d; read what came before", path, offset)
            return
        yield from (line for line in chunk.split(b"\n") if line)
        offset = len(data) - len(inflater.unused_data)


@dataclass
class ReadStats:
    files: int = 0
    lines: int = 0
    invalid: int = 0
    duplicates: int = 0


def days_between(start: datetime, end: datetime) -> list[str]:
    first, last = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def read_archive(root: Path, start: datetime, end: datetime, stats: ReadStats | None = None) -> Iterator[Event]:
    """Archived events with ``start <= ts < end``, in time order (ties by event id), each event once.

    Reads one day at a time, so memory holds one day's events.
    """
    stats = stats if stats is not None else ReadStats()
    lo, hi = start.timestamp(), end.timestamp()
    seen: set[str] = set()
    for day in days_between(start, end):
        folder = root / EVENTS / day
        if not folder.is_dir():
            continue
        items: list[tuple[float, str, Event]] = []
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            stats.files += 1
            for line in read_members(path):
                stats.lines += 1
                try:
                    event = Event.from_dict(orjson.loads(line))
                except (InvalidEventError, orjson.JSONDecodeError, TypeError, ValueError):
                    stats.invalid += 1
                    continue
                if not lo <= event.ts < hi:
                    continue
                if event.event_id in seen:
                    stats.duplicates += 1
                    continue
                seen.add(event.event_id)
                items.append((event.ts, event.event_id, event))
        items.sort(key=lambda x: (x[0], x[1]))
        yield from (e for _, _, e in items)
        seen.clear()  # an event's day is fixed by its ts: repeats are in the same day's files


def archived_days(root: Path) -> list[str]:
    folder = root / EVENTS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and _is_day(p.name))


def write_events(root: Path, events: Iterable[Event], writer_id: str = "import") -> int:
    """Archive events directly (imports, tests, the demo's history)."""
    writer = ArchiveWriter(root, writer_id=writer_id)
    return writer.append([orjson.dumps(e.to_dict()) for e in events])
