"""The event archive: day folders, one file per writer, gzip members per batch, readers that survive a cut tail."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import orjson

from models import Event, EventType
from router.storage.archive import ArchiveWriter, ReadStats, archived_days, read_archive

MIDNIGHT = datetime(2026, 12, 2, tzinfo=UTC).timestamp()


def raw(eid: str, ts: float) -> bytes:
    return orjson.dumps(Event(event_id=eid, type=EventType.PAGE_VIEW, ts=ts, source="pixel", visitor_id="v").to_dict())


def test_batches_split_by_the_events_day_and_read_back_in_time_order(tmp_path: Path) -> None:
    a = ArchiveWriter(tmp_path, writer_id="w1")
    b = ArchiveWriter(tmp_path, writer_id="w2")
    assert a.append([raw("e3", MIDNIGHT + 5), raw("e1", MIDNIGHT - 5), b"not json", b'{"no": "ts"}']) == 2
    assert b.append([raw("e2", MIDNIGHT + 1), raw("e3", MIDNIGHT + 5)]) == 2  # e3 redelivered to another worker
    assert a.append([raw("e4", MIDNIGHT + 7)]) == 1  # a second gzip member in the same file
    assert archived_days(tmp_path) == ["2026-12-01", "2026-12-02"]
    assert sorted(p.name for p in (tmp_path / "events" / "2026-12-02").iterdir()) == ["w1.jsonl.gz", "w2.jsonl.gz"]
    stats = ReadStats()
    start, end = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC)
    events = list(read_archive(tmp_path, start, end, stats))
    assert [e.event_id for e in events] == ["e1", "e2", "e3", "e4"]
    assert (stats.files, stats.lines, stats.duplicates) == (3, 5, 1)
    # The window is [from, to): the day boundary and the end are exact.
    only = list(read_archive(tmp_path, datetime(2026, 12, 2, tzinfo=UTC), datetime.fromtimestamp(MIDNIGHT + 5, UTC)))
    assert [e.event_id for e in only] == ["e2"]


def test_a_cut_tail_loses_only_the_batch_being_written(tmp_path: Path) -> None:
    w = ArchiveWriter(tmp_path, writer_id="w")
    w.append([raw("e1", MIDNIGHT + 1)])
    path = w.path_for("2026-12-02")
    whole = gzip.compress(raw("e2", MIDNIGHT + 2) + b"\n")
    with path.open("ab") as fh:
        fh.write(whole[: len(whole) // 2])  # the worker died mid-write
    start, end = datetime(2026, 12, 2, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC)
    assert [e.event_id for e in read_archive(tmp_path, start, end)] == ["e1"]
    with path.open("ab") as fh:
        fh.write(b"garbage that is not gzip")
    assert [e.event_id for e in read_archive(tmp_path, start, end)] == ["e1"]


def test_retention_deletes_old_day_folders_once_a_day(tmp_path: Path) -> None:
    w = ArchiveWriter(tmp_path, writer_id="w", retention_days=30)
    w.append([raw("old", MIDNIGHT - 40 * 86400), raw("kept", MIDNIGHT - 29 * 86400)], now=MIDNIGHT - 41 * 86400)
    assert len(archived_days(tmp_path)) == 2
    (tmp_path / "events" / "notes").mkdir()
    w.append([raw("new", MIDNIGHT)], now=MIDNIGHT)
    assert archived_days(tmp_path) == ["2026-11-03", "2026-12-02"]
    assert (tmp_path / "events" / "notes").is_dir()  # not a day folder: left alone
