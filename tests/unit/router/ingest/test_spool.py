"""The spool's files on a real disk (tmp_path): append, read, acknowledge, rotate, recover, refuse.

No broker here: the forwarder's Kafka side is covered by
tests/integration/test_spool_broker.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import orjson
import pytest

from models import Event, EventType
from router.errors import SettingsError
from router.ingest import spool as spool_module
from router.ingest.spool import (
    CHECKPOINT,
    Spool,
    SpoolError,
    SpoolFull,
    SpoolRecord,
    SpoolSink,
    decode_line,
    encode_line,
    segment_name,
)
from router.metrics import REGISTRY
from router.settings import Settings

T0 = 1_800_000_000.0


def ev(n: int, vid: str = "visitor-000001") -> Event:
    return Event(event_id=f"e{n:06d}", type=EventType.PAGE_VIEW, ts=T0 + n, source="pixel", visitor_id=vid,
                 url=f"https://ex.test/{n}", title=f"page {n}")


Make = Callable[..., Spool]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    opened: list[Spool] = []

    def factory(directory: Path | None = None, **kw: object) -> Spool:
        args: dict[str, object] = {"max_bytes": 1_000_000, "segment_bytes": 4096, "fsync": "always"}
        args.update(kw)
        spool = Spool(directory or tmp_path / "spool", **args).open()  # type: ignore[arg-type]
        opened.append(spool)
        return spool

    yield factory
    for s in opened:
        await s.close()


def ids(records: Sequence[SpoolRecord]) -> list[str]:
    return [r.event_id for r in records]


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_lines_round_trip() -> None:
    e = ev(1)
    line = encode_line(e)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    rec = decode_line(3, 100, line[:-1])
    assert rec is not None
    assert (rec.segment, rec.end, rec.key, rec.event_id) == (3, 100, b"v:visitor-000001", "e000001")
    assert Event.from_dict(orjson.loads(rec.value)) == e
    assert decode_line(1, 1, b'{"k": "x"') is None
    assert decode_line(1, 1, b"\x00\x00\x00") is None
    assert decode_line(1, 1, b'{"k": 5, "v": {}}') is None


async def test_append_read_ack_in_order(make: Make) -> None:
    spool = make()
    await spool.start()
    await spool.append([ev(1), ev(2)])
    await spool.append([ev(3)])
    assert spool.pending == 3 and spool.has_unread()
    first = spool.read(max_records=2)
    assert ids(first) == ["e000001", "e000002"]
    rest = spool.read()
    assert ids(rest) == ["e000003"]
    assert spool.read() == [] and not spool.has_unread()
    spool.ack(first[-1], 2)
    assert spool.pending == 1
    spool.ack(rest[-1], 1)
    assert spool.pending == 0
    assert sample("leadrouter_spool_pending_events") == 0
    await spool.close()  # writes the checkpoint if an ack since the last write is not in it
    ck = orjson.loads((spool.dir / CHECKPOINT).read_bytes())
    assert (ck["segment"], ck["offset"]) == (rest[-1].segment, rest[-1].end)


async def test_the_checkpoint_is_written_at_most_every_interval_and_on_close(
        make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "CHECKPOINT_EVERY_S", 3600.0)
    spool = make()
    await spool.start()
    await spool.append([ev(1), ev(2)])

    def on_disk() -> tuple[int, int]:
        ck = orjson.loads((spool.dir / CHECKPOINT).read_bytes())
        return ck["segment"], ck["offset"]

    start = on_disk()  # written by open()
    first, second = spool.read(max_records=1), spool.read(max_records=1)
    spool.ack(first[-1], 1)
    spool.ack(second[-1], 1)
    assert on_disk() == start  # within the interval: not rewritten per ack
    await spool.close()
    assert on_disk() == (second[-1].segment, second[-1].end)
    # Reopened: nothing pending, nothing replayed.
    again = make(spool.dir)
    assert again.pending == 0 and again.restored_pending == 0


async def test_segments_rotate_and_are_deleted_once_acknowledged(make: Make) -> None:
    spool = make(segment_bytes=1024)
    await spool.start()
    for n in range(12):
        await spool.append([ev(n)])
    segs = spool.segments()
    assert len(segs) >= 3
    assert all(p.stat().st_size <= 1024 for p in spool.dir.glob("seg-*.jsonl"))
    records = spool.read(max_records=100)
    assert ids(records) == [f"e{n:06d}" for n in range(12)]
    middle = next(r for r in records if r.segment == segs[1])
    spool.ack(middle, records.index(middle) + 1)
    assert not (spool.dir / segment_name(segs[0])).exists()
    assert (spool.dir / segment_name(segs[1])).exists()
    assert spool.disk_bytes == sum(p.stat().st_size for p in spool.dir.glob("seg-*.jsonl"))


async def test_a_full_spool_refuses_all_of_an_append(make: Make) -> None:
    spool = make(max_bytes=2000, segment_bytes=1024)
    await spool.start()
    sink = SpoolSink(spool)
    stored = 0
    with pytest.raises(SpoolFull) as exc:
        for n in range(100):
            await sink.send(ev(n))
            stored += 1
    assert "LEADROUTER_SPOOL_MAX_BYTES" in str(exc.value)
    assert 0 < stored < 100 and spool.pending == stored
    assert spool.disk_bytes <= 2000
    # All or none: a batch that does not fit leaves nothing behind.
    with pytest.raises(SpoolFull):
        await sink.send_many([ev(500), ev(501)])
    assert spool.pending == stored
    # Acknowledging frees whole segments, and appends work again.
    records = spool.read(max_records=1000)
    spool.ack(records[-1], len(records))
    await sink.send(ev(1000))
    assert ids(spool.read()) == ["e001000"]


async def test_reopen_replays_what_was_not_acknowledged(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "replay"
    first = make(directory)
    await first.start()
    await first.append([ev(n) for n in range(5)])
    records = first.read(max_records=2)
    first.ack(records[-1], 2, {0: 41, 3: 7})
    await first.close()
    second = make(directory)
    assert second.pending == 3 and second.restored_pending == 3
    assert second.known_end == {0: 41, 3: 7}
    await second.start()
    await second.append([ev(5)])
    assert ids(second.read(max_records=100)) == ["e000002", "e000003", "e000004", "e000005"]


async def test_reopen_with_nothing_pending_starts_clean(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "clean"
    first = make(directory)
    await first.start()
    await first.append([ev(1)])
    first.ack(first.read()[-1], 1)
    await first.close()
    second = make(directory)
    assert second.pending == 0 and not second.has_unread()
    assert len(list(directory.glob("seg-*.jsonl"))) == 1  # only the new, empty segment


async def test_a_torn_last_line_is_truncated_on_recovery(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "torn"
    first = make(directory)
    await first.start()
    await first.append([ev(1), ev(2)])
    seg = first.segments()[-1]
    await first.close()
    path = directory / segment_name(seg)
    good = path.stat().st_size
    with path.open("ab") as f:
        f.write(encode_line(ev(3))[:40])  # the process died mid-write
    before = REGISTRY.get_sample_value("leadrouter_spool_corrupt_lines_total") or 0.0
    second = make(directory)
    assert path.stat().st_size == good
    assert second.pending == 2
    assert ids(second.read()) == ["e000001", "e000002"]
    assert (REGISTRY.get_sample_value("leadrouter_spool_corrupt_lines_total") or 0.0) == before + 1


async def test_an_unreadable_line_in_the_middle_is_skipped_and_counted(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "corrupt"
    first = make(directory)
    await first.start()
    await first.append([ev(1)])
    seg = first.segments()[-1]
    await first.close()
    with (directory / segment_name(seg)).open("ab") as f:
        f.write(b"garbage that is not json\n" + encode_line(ev(2)))
    second = make(directory)
    assert second.pending == 3
    assert ids(second.read()) == ["e000001", "e000002"]
    assert second.pending == 2


async def test_an_unreadable_checkpoint_replays_everything(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "badck"
    first = make(directory)
    await first.start()
    await first.append([ev(1), ev(2)])
    first.ack(first.read(max_records=1)[-1], 1)
    await first.close()
    (directory / CHECKPOINT).write_text("{not json")
    second = make(directory)
    assert ids(second.read()) == ["e000001", "e000002"]


async def test_one_spool_dir_one_collector(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "locked"
    make(directory)
    with pytest.raises(SettingsError) as exc:
        Spool(directory, max_bytes=10_000, segment_bytes=4096).open()
    assert "LEADROUTER_SPOOL_DIR" in str(exc.value)


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
async def test_every_fsync_policy_stores_and_survives_reopen(make: Make, tmp_path: Path, policy: str) -> None:
    directory = tmp_path / policy
    spool = make(directory, fsync=policy, fsync_interval_s=0.01)
    await spool.start()
    await asyncio.gather(*(spool.append([ev(n)]) for n in range(20)))  # concurrent: one group commit
    await asyncio.sleep(0.05)
    await spool.close()
    again = make(directory, fsync=policy)
    assert again.pending == 20
    assert sorted(ids(again.read(max_records=100))) == [f"e{n:06d}" for n in range(20)]


async def test_a_closed_spool_refuses(make: Make) -> None:
    spool = make()
    await spool.start()
    await spool.close()
    with pytest.raises(SpoolError):
        await spool.append([ev(1)])


async def test_wait_unread_wakes_on_append(make: Make) -> None:
    spool = make(fsync="never")
    await spool.start()
    assert await spool.wait_unread(timeout=0.05) is False
    waiter = asyncio.create_task(spool.wait_unread(timeout=5))
    await asyncio.sleep(0.01)
    await spool.append([ev(1)])
    assert await waiter is True


def test_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="LEADROUTER_SPOOL_FSYNC"):
        Settings.of(spool_fsync="sometimes")
    with pytest.raises(SettingsError, match="LEADROUTER_SPOOL_MAX_BYTES"):
        Settings.of(spool_max_bytes=10)


def test_defaults() -> None:
    s = Settings()
    assert s.spool.dir == Path("var/spool") and s.spool.fsync == "always"
    assert s.spool.max_bytes == 1024 ** 3 and s.spool.segment_bytes == 16 * 1024 ** 2
    assert not os.path.isabs(s.spool.dir)


async def test_a_beacon_does_not_wait_for_the_fsync_but_a_form_does(make: Make,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spool = make(fsync="always")
    release = asyncio.Event()
    real = Spool._fsync
    loop = asyncio.get_running_loop()

    def slow_fsync(self: Spool, fds: list[int], dir_too: bool) -> None:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)  # the disk is slow
        real(self, fds, dir_too)

    monkeypatch.setattr(Spool, "_fsync", slow_fsync)
    await asyncio.wait_for(spool.append([ev(1)], wait_durable=False), 1.0)  # a pixel: written, not waiting
    form = asyncio.create_task(spool.append([ev(2)]))  # a form: waits until durable
    await asyncio.sleep(0.2)
    assert not form.done()
    release.set()
    await asyncio.wait_for(form, 5.0)
    assert ids(spool.read(10)) == [ev(1).event_id, ev(2).event_id]


async def test_beacons_share_one_fsync_within_the_interval(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    """Policy ``always``: beacons' lines are fsynced together, within fsync_interval_s of the first one,
    not one wake-up per line; a form's fsync in between covers them at once."""
    spool = make(fsync="always", fsync_interval_s=0.3, segment_bytes=1_000_000)
    synced: list[list[int]] = []
    real = Spool._fsync

    def counting(self: Spool, fds: list[int], dir_too: bool) -> None:
        synced.append(fds)
        real(self, fds, dir_too)

    monkeypatch.setattr(Spool, "_fsync", counting)
    await spool.start()
    await asyncio.sleep(0.05)
    synced.clear()  # the new segment's directory entry
    for n in range(20):
        await spool.append([ev(n)], wait_durable=False)
    await asyncio.sleep(0.1)
    assert synced == []  # written (readable), not yet fsynced: inside the window
    assert len(spool.read(100)) == 20
    await asyncio.sleep(0.4)
    assert len(synced) == 1 and synced[0]  # one group fsync for all 20, within the interval
    await spool.append([ev(100)], wait_durable=False)
    await asyncio.wait_for(spool.append([ev(101)]), 1.0)  # a form: durable now, the beacon with it
    assert len(synced) == 2
    await asyncio.sleep(0.4)
    assert len(synced) == 2  # nothing left for the beacon's timer to sync


def test_a_line_is_the_event_dict_as_json() -> None:
    """encode_line lets orjson write the dataclass: byte for byte what ``to_dict`` gives, any Mapping included."""
    from types import MappingProxyType

    events = [ev(1), Event(event_id="f1", type=EventType.FORM_FILL, ts=T0, source="form", email="a@b.test",
                           fields=MappingProxyType({"form_id": "demo"}), traits={"plan": "pro"},
                           utm={"utm_source": "x"}, machine=0.9, machine_reason="crawler:bot")]
    for e in events:
        assert encode_line(e) == orjson.dumps({"k": e.partition_key(), "v": e.to_dict()}) + b"\n"


@pytest.mark.parametrize("line", [
    encode_line(ev(1))[:-1],
    encode_line(Event(event_id="q1", type=EventType.PAGE_VIEW, ts=T0, source="pixel",
                      visitor_id='a"b\\c,"v":{', url="https://a.test/}"))[:-1],
    b'{"v": {"event_id": "x", "a": 1}, "k": "kk"}',  # another layout: re-encoded
    b'{"k":"kk","v":{"event_id":"x"},"z":1}',  # an extra member: re-encoded, never sliced
])
def test_a_decoded_value_is_the_events_json(line: bytes) -> None:
    record = decode_line(1, len(line) + 1, line)
    assert record is not None
    assert record.value == orjson.dumps(orjson.loads(line)["v"])
    assert record.key == orjson.loads(line)["k"].encode()


# --- a writer and a reader in two processes (LEADROUTER_SPOOL_FORWARDER=process/external) ----------
# The two roles share only the files; here they are two Spool objects on one directory.

async def test_a_reader_sees_what_a_writer_appends_in_order_across_segments(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "split"
    writer = make(directory, role="writer", segment_bytes=1024)
    reader = make(directory, role="reader", segment_bytes=1024)
    await writer.start()
    assert not reader.has_unread()
    got: list[SpoolRecord] = []
    for n in range(20):
        await writer.append([ev(n)])
        if n % 3 == 0:
            got += reader.read(max_records=100)
    got += reader.read(max_records=100)
    assert ids(got) == [f"e{n:06d}" for n in range(20)]
    assert len(writer.segments()) >= 3
    assert reader.pending == 20
    reader.ack(got[-1], len(got))
    assert reader.pending == 0
    # The reader deleted every finished segment; the writer notices on its next refresh.
    assert [p.name for p in directory.glob("seg-*.jsonl")] == [segment_name(writer.segments()[-1])]
    writer._writer_refresh()
    assert writer.disk_bytes == sum(p.stat().st_size for p in directory.glob("seg-*.jsonl"))


async def test_a_reader_waits_for_a_line_being_written_instead_of_dropping_it(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "partial"
    writer = make(directory, role="writer")
    reader = make(directory, role="reader")
    await writer.start()
    corrupt = sample("leadrouter_spool_corrupt_lines_total")
    line = encode_line(ev(1))
    # Half a line, as another process may see a write in progress.
    os.write(writer._wfd, line[:20])  # type: ignore[arg-type]
    assert reader.read() == []
    os.write(writer._wfd, line[20:])  # type: ignore[arg-type]
    assert ids(reader.read()) == ["e000001"]
    assert sample("leadrouter_spool_corrupt_lines_total") == corrupt


async def test_a_reader_started_later_forwards_from_the_checkpoint(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "later"
    writer = make(directory, role="writer")
    await writer.start()
    await writer.append([ev(n) for n in range(5)])
    first = make(directory, role="reader")
    records = first.read()
    first.ack(records[2], 3)
    await first.close()
    await writer.append([ev(5)])
    second = make(directory, role="reader")
    assert second.restored_pending == 3
    assert ids(second.read()) == ["e000003", "e000004", "e000005"]


async def test_a_writer_restart_never_reuses_a_segment(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "restart"
    writer = make(directory, role="writer")
    reader = make(directory, role="reader")
    await writer.append([ev(1)])
    await writer.close()
    second = make(directory, role="writer")
    await second.append([ev(2)])
    assert len(second.segments()) == 2
    assert ids(reader.read()) == ["e000001", "e000002"]


async def test_one_forwarder_per_spool_dir(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "one"
    make(directory, role="writer")
    make(directory, role="reader")
    with pytest.raises(SettingsError) as exc:
        Spool(directory, max_bytes=10_000, segment_bytes=4096, role="reader").open()
    assert "forwarder" in str(exc.value)
    other = tmp_path / "inline"
    make(other)  # the collector with its forwarder inline holds both locks
    with pytest.raises(SettingsError):
        Spool(other, max_bytes=10_000, segment_bytes=4096, role="reader").open()
    with pytest.raises(SettingsError):
        Spool(other, max_bytes=10_000, segment_bytes=4096, role="writer").open()
