"""A bounded, durable local spool in front of Kafka (the forwarder that drains it is :mod:`router.ingest.forwarder`).

Nothing the collector accepts is lost while the broker is unreachable.

Write-ahead, always
    Every accepted event is appended to the spool *before* the request is
    answered; a single background :class:`KafkaForwarder` is the only path to
    Kafka.  One path keeps the order simple (the spool is one ordered log, so
    every person's events reach Kafka in the order they were accepted) and a
    broker outage changes nothing for clients but the spool depth.  A ``202``
    or ``{"success": true}`` therefore means "durably spooled", not "in Kafka".
    The forwarder runs on the collector's event loop or, with
    ``LEADROUTER_SPOOL_FORWARDER=process``/``external``, in its own process
    reading these files (:class:`Spool` roles ``writer`` and ``reader``).

Files
    ``<spool_dir>/seg-<n>.jsonl``: append-only segments of at most
    ``spool_segment_bytes``, one JSON line per event
    ``{"k": <partition key>, "v": <event>}``.  ``checkpoint.json`` records how
    far Kafka has acknowledged (segment, byte offset) and the partition offsets
    that follows from; it is replaced atomically (write + rename), at most every
    ``CHECKPOINT_EVERY_S`` (0.5 s), before a segment it covers is deleted and on
    close (after a crash, a stale one only means re-checking more of Kafka).  Segments
    wholly before the checkpoint are deleted.  ``LOCK`` (flock) keeps a second
    collector off the same directory.

fsync policy (``spool_fsync``)
    ``always`` (default): a form or API request is answered only after its
    line is fsynced; concurrent requests share one fsync (group commit).  A
    beacon (pixel, email open or click, Snowplow GET) is answered once its
    line is written to the segment file (in the OS page cache: it survives the
    collector process dying, not the machine crashing); its fsync follows in
    the next group commit, at most ``spool_fsync_interval_s`` later (sooner
    when a form's fsync comes first).  So a pixel's 200 promises "written, and
    durable within the interval"; a form's 202 promises "durable".
    ``interval``: fsync every ``spool_fsync_interval_s`` for everything; a
    crash of the machine (not of the process) can lose that window.
    ``never``: the OS decides.

Bound
    Appends that would take the segment files past ``spool_max_bytes`` raise
    :class:`SpoolFull`: API clients get ``503`` + ``Retry-After``, pixels still
    get their GIF, and refusals are counted.

Exactly once in the topic, in order
    Kafka producers without idempotence can duplicate: a broker that stops
    answering (e.g. ``SIGSTOP``) may still append a batch the client already
    gave up on.  So after any unanswered send, once the broker answers again
    (and ``spool_recheck_delay_s`` later, for requests still queued in its
    sockets), the forwarder reads the affected partitions from the last
    offset it knows was acknowledged and drops every spooled event whose
    ``event_id`` is already there before sending the rest.  Each round sends
    at most one batch per partition, and a batch lands whole or not at all,
    so per-partition order holds.  The same check runs after a restart for
    events that were pending when the collector stopped.

Restart
    :meth:`Spool.open` recovers: it drops a torn last line, starts a new
    segment, and the forwarder replays everything after the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from models import Event
from router import metrics
from router.errors import SettingsError
from router.settings import SpoolSettings
from router.storage.kafka import ProduceError

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "interval", "never")
SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".jsonl"
CHECKPOINT = "checkpoint.json"
LOCK = "LOCK"
FORWARDER_LOCK = "FORWARDER.LOCK"
SPOOL_ROLES = ("both", "writer", "reader")
# A reader in its own process (``leadrouter forwarder``) looks for new lines this often when idle.
READER_POLL_S = 0.01
# A writer whose forwarder runs in another process notices deleted segments this often.
WRITER_REFRESH_S = 0.5
# When everything is acknowledged and the active segment is at least this big,
# start a new one so the old one can be deleted.
ROLL_ON_DRAIN_BYTES = 1024 * 1024
_READ_CHUNK = 256 * 1024
CHECKPOINT_EVERY_S = 0.5  # acks are written to checkpoint.json at most this often (see Spool.ack)


class SpoolError(ProduceError):
    """The spool could not store an event (disk full, I/O error)."""


class SpoolFull(SpoolError):
    """The spool is at ``spool_max_bytes``: refuse, the client retries later."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spooled event as the forwarder reads it back."""

    segment: int
    end: int  # byte offset just past this record's line in its segment
    key: bytes
    value: bytes
    event_id: str


def segment_name(n: int) -> str:
    return f"{SEGMENT_PREFIX}{n:012d}{SEGMENT_SUFFIX}"


def encode_line(event: Event) -> bytes:
    """``{"k": <partition key>, "v": <event.to_dict()>}`` and a newline.  orjson writes the dataclass
    itself (its fields in order, the type's value), without building the dict first; ``_plain`` turns
    any other Mapping (utm, fields, traits) into a dict as ``to_dict`` does."""
    return orjson.dumps({"k": event.partition_key(), "v": event}, default=_plain,
                        option=orjson.OPT_APPEND_NEWLINE)


def _plain(value: object) -> dict[str, object]:
    if isinstance(value, Mapping):
        return dict(value)
    msg = f"cannot write a {type(value).__name__} to the spool"
    raise TypeError(msg)


def decode_line(segment: int, end: int, line: bytes) -> SpoolRecord | None:
    """The record on one line, or None for an unreadable line."""
    try:
        data = orjson.loads(line)
        key, value = data["k"], data["v"]
        if not isinstance(key, str) or not isinstance(value, dict):
            return None
        event_id = str(value.get("event_id") or "")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    # A line encode_line wrote is {"k":<key>,"v":<event>} with no spaces: the event's bytes are a slice
    # of it (what orjson.dumps(value) would give again).  Any other layout is re-encoded.
    head = b'{"k":' + orjson.dumps(key) + b',"v":'
    exact = len(data) == 2 and line.startswith(head) and line.endswith(b"}")
    raw = line[len(head):-1] if exact else orjson.dumps(value)
    return SpoolRecord(segment=segment, end=end, key=key.encode(), value=raw, event_id=event_id)


class Spool:
    """Append-only segment files with a checkpoint; one writer and one reader.

    ``role``: ``both`` (the writer and the reader share one event loop: the collector with its forwarder
    inline), ``writer`` (the collector, its forwarder in another process) or ``reader`` (that forwarder,
    ``leadrouter forwarder``).  Across processes the files are the only thing shared: the writer appends
    and fsyncs (it alone truncates a torn tail, at open), the reader polls the segment files for new
    lines, writes ``checkpoint.json`` and deletes the segments it has finished; the writer notices the
    deletions within ``WRITER_REFRESH_S``.  ``LOCK`` keeps a second writer off the directory,
    ``FORWARDER.LOCK`` a second reader (``both`` holds the two).
    """

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int, fsync: str = "always",
                 fsync_interval_s: float = 0.2, role: str = "both") -> None:
        if fsync not in FSYNC_POLICIES:
            msg = f"spool fsync policy {fsync!r} is unknown; use one of {', '.join(FSYNC_POLICIES)}"
            raise SettingsError(msg)
        if role not in SPOOL_ROLES:
            msg = f"spool role {role!r} is unknown; use one of {', '.join(SPOOL_ROLES)}"
            raise SettingsError(msg)
        self.role = role
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.known_end: dict[int, int] = {}
        self.restored_pending = 0  # events pending when the spool was opened
        self._lock_fd: int | None = None
        self._forwarder_lock_fd: int | None = None
        self._seen: tuple[int, int] = (0, 0)  # reader: records before this position are counted in _pending
        self._refresh_timer: asyncio.TimerHandle | None = None  # writer: notices deleted segments
        self._sizes: dict[int, int] = {}  # segment -> bytes on disk
        self._active = 0
        self._wfd: int | None = None
        self._ack: tuple[int, int] = (0, 0)  # everything before (segment, offset) is acknowledged
        self._read: tuple[int, int] = (0, 0)  # the reader's next position
        self._rfd: tuple[int, int] | None = None  # (segment, fd)
        self._pending = 0
        self._appended = asyncio.Event()
        self._dirty = asyncio.Event()
        self._dirty_fds: set[int] = set()
        self._dir_dirty = False
        self._retired: list[int] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._sync_task: asyncio.Task[None] | None = None
        self._lazy: asyncio.TimerHandle | None = None  # the pending beacon fsync (policy ``always``)
        self._checkpointed_at = 0.0  # time.monotonic() of the last checkpoint write
        self._checkpoint_stale = False  # acks since then are not in the file yet
        self._closing = asyncio.Event()
        self._closed = False

    # --- lifecycle ---------------------------------------------------------
    @classmethod
    def from_settings(cls, spool: SpoolSettings, role: str = "both") -> Spool:
        return cls(spool.dir, max_bytes=spool.max_bytes, segment_bytes=spool.segment_bytes, fsync=spool.fsync,
                   fsync_interval_s=spool.fsync_interval_s, role=role)

    def _flock(self, name: str, msg: str) -> int:
        fd = os.open(self.dir / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SettingsError(msg) from None
        return fd

    def open(self) -> Spool:
        """Lock the directory, recover what a previous run left, start a new segment."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.role != "reader":
            self._lock_fd = self._flock(LOCK, f"spool directory {self.dir} is in use by another collector; give "
                                              "each collector its own LEADROUTER_SPOOL_DIR")
        if self.role != "writer":
            try:
                self._forwarder_lock_fd = self._flock(
                    FORWARDER_LOCK, f"spool directory {self.dir} is already drained by a forwarder (`leadrouter "
                                    "forwarder`, or a collector with LEADROUTER_SPOOL_FORWARDER=inline); run one "
                                    "forwarder per spool directory")
            except SettingsError:
                self._unlock()
                raise
        if self.role == "writer":
            self._open_writer()
        elif self.role == "reader":
            self._open_reader()
        else:
            self._open_both()
        return self

    def _unlock(self) -> None:
        for fd in (self._lock_fd, self._forwarder_lock_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._forwarder_lock_fd = None

    def _open_writer(self) -> None:
        """The collector whose forwarder is another process: truncate a torn tail (nobody else writes),
        start a new segment after every existing one and after the checkpoint's; never touch the
        checkpoint or delete a segment (the reader does)."""
        segments = sorted(self._list_segments())
        ck_seg, _ = self._load_checkpoint()
        self._sizes = {n: (self.dir / segment_name(n)).stat().st_size for n in segments}
        if segments:
            self._truncate_torn_tail(segments[-1])
        self._new_segment(max((segments[-1] + 1) if segments else 1, ck_seg + 1))
        metrics.SPOOL_BYTES.set(self.disk_bytes)

    def _open_reader(self) -> None:
        """The forwarder in its own process: resume after the checkpoint; lines appear as the writer adds
        them (:meth:`_refresh`).  A last line without its end is being written, not torn."""
        ck_seg, ck_off = self._load_checkpoint()
        segments = sorted(self._list_segments())
        for n in segments:
            if n < ck_seg:
                self._unlink(n)
        segments = [n for n in segments if n >= ck_seg]
        self._sizes = {n: (self.dir / segment_name(n)).stat().st_size for n in segments}
        if segments and segments[0] == ck_seg:
            self._ack = (ck_seg, min(ck_off, self._sizes[ck_seg]))
        elif segments:
            self._ack = (segments[0], 0)
        else:
            self._ack = (ck_seg, 0)
        self._read = self._ack
        self._pending = self._count_pending()
        self.restored_pending = self._pending
        self._seen = (segments[-1], self._sizes[segments[-1]]) if segments else self._ack
        self._write_checkpoint()
        self._gauges()
        if self._pending:
            log.warning("spool %s: %d events not yet in Kafka will be forwarded", self.dir, self._pending)

    def _refresh(self) -> None:
        """Reader: the segments and sizes on disk now.  The listing comes first: once a later segment
        exists the writer is done with the earlier ones, so their sizes, read after it, are final."""
        later = [n for n in self._list_segments() if n >= self._read[0]]
        for n in sorted(later):
            try:
                self._sizes[n] = os.stat(self.dir / segment_name(n)).st_size
            except FileNotFoundError:
                self._sizes.pop(n, None)

    def _writer_refresh(self) -> None:
        """Writer: forget the segments the forwarder process has deleted (the bound counts what is on disk)."""
        self._refresh_timer = None
        if self._closed:
            return
        for n in [n for n in self._sizes if n != self._active]:
            if not (self.dir / segment_name(n)).exists():
                del self._sizes[n]
        metrics.SPOOL_BYTES.set(self.disk_bytes)
        self._refresh_timer = asyncio.get_running_loop().call_later(WRITER_REFRESH_S, self._writer_refresh)

    def _open_both(self) -> None:
        segments = sorted(self._list_segments())
        ck_seg, ck_off = self._load_checkpoint()
        for n in segments:
            if n < ck_seg:
                self._unlink(n)
        segments = [n for n in segments if n >= ck_seg]
        self._sizes = {n: (self.dir / segment_name(n)).stat().st_size for n in segments}
        if segments:
            self._truncate_torn_tail(segments[-1])
        if segments and segments[0] == ck_seg:
            self._ack = (ck_seg, min(ck_off, self._sizes[ck_seg]))
        elif segments:
            self._ack = (segments[0], 0)
        self._read = self._ack
        self._pending = self._count_pending()
        self.restored_pending = self._pending
        self._new_segment((segments[-1] + 1) if segments else max(ck_seg, 1))
        if self._ack == (0, 0) or self._pending == 0:
            # Nothing to replay: what is left on disk was acknowledged.
            self._ack = self._read = (self._active, 0)
            self._write_checkpoint()
            for n in segments:
                self._unlink(n)
        self._gauges()
        if self._pending:
            log.warning("spool %s: %d events from a previous run will be replayed", self.dir, self._pending)

    async def start(self) -> None:
        if self.role == "reader":
            return
        if self.role == "writer" and self._refresh_timer is None and not self._closed:
            self._refresh_timer = asyncio.get_running_loop().call_later(WRITER_REFRESH_S, self._writer_refresh)
        if self._sync_task is None:
            self._sync_task = asyncio.create_task(self._sync_loop(), name="spool-fsync")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
            self._refresh_timer = None
        if self._lazy is not None:
            self._lazy.cancel()
            self._lazy = None
        if self._sync_task is not None:
            # Let a running fsync finish: its thread holds our file descriptors.
            self._closing.set()
            self._dirty.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sync_task), 30.0)
            if not self._sync_task.done():
                self._sync_task.cancel()
        if self._checkpoint_stale and self._forwarder_lock_fd is not None:
            with contextlib.suppress(OSError):
                self._write_checkpoint()
        fds = [fd for fd in (*self._retired, self._wfd) if fd is not None]
        if self.fsync != "never":
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
        for w in self._waiters:
            if not w.done():
                w.set_result(None)
        self._waiters = []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._retired = []
        self._wfd = None
        if self._rfd is not None:
            os.close(self._rfd[1])
            self._rfd = None
        self._unlock()

    # --- state -------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Events appended and not yet acknowledged."""
        return self._pending

    @property
    def disk_bytes(self) -> int:
        return sum(self._sizes.values())

    def segments(self) -> list[int]:
        return sorted(self._sizes)

    def has_unread(self) -> bool:
        if self.role == "reader":
            self._refresh()
        seg, pos = self._read
        return pos < self._sizes.get(seg, 0) or any(n > seg for n in self._sizes if self._sizes[n])

    async def wait_unread(self, timeout: float | None = None) -> bool:
        """Wait until there is something the reader has not read yet."""
        if self.role == "reader":  # another process writes: look at the files every READER_POLL_S
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self.has_unread():
                if self._closed or (deadline is not None and time.monotonic() >= deadline):
                    return False
                await asyncio.sleep(READER_POLL_S)
            return True
        while not self.has_unread():
            self._appended.clear()
            try:
                await asyncio.wait_for(self._appended.wait(), timeout)
            except TimeoutError:
                return self.has_unread()
        return True

    # --- writer ------------------------------------------------------------
    async def append(self, events: Sequence[Event], *, wait_durable: bool = True) -> None:
        """Store events in order, all or none; returns once durable per the fsync policy.

        With ``wait_durable=False`` it returns once the events are written (in
        the OS page cache: they survive the process dying) and the next group
        fsync makes them durable, without the caller waiting for it.
        """
        if not events:
            return
        if self._sync_task is None and not self._closed:
            await self.start()
        data = b"".join(encode_line(e) for e in events)
        self.append_bytes_nowait(data, len(events))
        if self.fsync == "always" and not wait_durable:
            self._sync_soon()
        elif self.fsync == "always":
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._dirty.set()
            await waiter

    def _sync_soon(self) -> None:
        """A beacon's line is written: have it fsynced within ``fsync_interval_s``, in the next group
        commit (sooner when a durable append asks for one); one timer per window, not a wake-up per line."""
        if self._lazy is None and not self._closed:
            self._lazy = asyncio.get_running_loop().call_later(self.fsync_interval_s, self._dirty.set)

    def append_bytes_nowait(self, data: bytes, count: int) -> None:
        if self._closed or self._wfd is None:
            msg = "the spool is closed"
            raise SpoolError(msg)
        if self.disk_bytes + len(data) > self.max_bytes:
            msg = (f"the spool {self.dir} is full ({self.disk_bytes} of {self.max_bytes} bytes, "
                   "LEADROUTER_SPOOL_MAX_BYTES) while Kafka is unreachable")
            raise SpoolFull(msg)
        size = self._sizes[self._active]
        if size and size + len(data) > self.segment_bytes:
            self._new_segment(self._active + 1)
            size = 0
        fd = self._wfd
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # never leave half a line behind
            msg = f"could not write to the spool {self.dir}: {exc}"
            raise SpoolError(msg) from exc
        self._sizes[self._active] = size + len(data)
        self._pending += count
        self._dirty_fds.add(fd)
        if self.fsync != "always":
            self._dirty.set()
        self._appended.set()  # the gauges follow in the sync round, within fsync_interval_s

    def _new_segment(self, n: int) -> None:
        if self._wfd is not None:
            self._retired.append(self._wfd)
            self._dirty.set()
        path = self.dir / segment_name(n)
        self._wfd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._active = n
        self._sizes.setdefault(n, os.fstat(self._wfd).st_size)
        self._dir_dirty = True

    async def _sync_loop(self) -> None:
        while not self._closing.is_set():
            if self.fsync == "interval":
                await sleep_or_stop(self._closing, self.fsync_interval_s)
            else:
                await self._dirty.wait()
            self._dirty.clear()
            if self._lazy is not None:  # this round covers the beacons' lines too
                self._lazy.cancel()
                self._lazy = None
            fds = list(self._dirty_fds)
            self._dirty_fds.clear()
            waiters, self._waiters = self._waiters, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            error: OSError | None = None
            if self.fsync != "never" and (fds or dir_dirty):
                started = time.perf_counter()
                try:
                    await asyncio.to_thread(self._fsync, fds, dir_dirty)
                except OSError as exc:
                    error = exc
                    log.error("spool fsync failed: %s", exc)
                metrics.SPOOL_FSYNC_SECONDS.observe(time.perf_counter() - started)
            self._gauges()
            for w in waiters:
                if w.done():
                    continue
                if error is None:
                    w.set_result(None)
                else:
                    w.set_exception(SpoolError(f"could not fsync the spool {self.dir}: {error}"))
            keep = [fd for fd in self._retired if fd in self._dirty_fds]
            for fd in self._retired:
                if fd not in keep:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._retired = keep

    def _fsync(self, fds: list[int], dir_too: bool) -> None:
        for fd in fds:
            os.fsync(fd)
        if dir_too:
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    # --- reader ------------------------------------------------------------
    def read(self, max_records: int = 1000, max_bytes: int = 1024 * 1024) -> list[SpoolRecord]:
        """The next records after what was read before (at least one if any is unread)."""
        out: list[SpoolRecord] = []
        taken = 0
        if self.role == "reader":
            self._refresh()
        while len(out) < max_records and taken < max_bytes:
            seg, pos = self._read
            size = self._sizes.get(seg, 0)
            if pos >= size:
                later = [n for n in self._sizes if n > seg]
                if not later:
                    break
                self._read = (min(later), 0)
                continue
            fd = self._reader_fd(seg)
            want = min(max(_READ_CHUNK, max_bytes - taken), size - pos)
            chunk = os.pread(fd, want, pos)
            while b"\n" not in chunk and pos + len(chunk) < size:
                chunk += os.pread(fd, min(_READ_CHUNK * 4, size - pos - len(chunk)), pos + len(chunk))
            last_nl = chunk.rfind(b"\n")
            if last_nl < 0 and self.role == "reader" and not any(n > seg for n in self._sizes):
                break  # the writer is writing this line in the newest segment: read it next time
            if last_nl < 0:
                # A line without its newline at the end of a finished segment: unreadable.
                metrics.SPOOL_CORRUPT.inc()
                log.error("spool segment %d: dropped %d bytes without a line end", seg, size - pos)
                self._skip_corrupt_tail(seg, size)
                continue
            start = 0
            while start <= last_nl and len(out) < max_records and taken < max_bytes:
                nl = chunk.index(b"\n", start)
                line = chunk[start:nl]
                end = pos + nl + 1
                record = decode_line(seg, end, line)
                if record is None:
                    metrics.SPOOL_CORRUPT.inc()
                    log.error("spool segment %d: skipped an unreadable line at byte %d", seg, pos + start)
                    if self.role != "reader" or (seg, end) <= self._seen:
                        self._pending = max(0, self._pending - 1)
                    else:
                        self._seen = (seg, end)
                else:
                    out.append(record)
                    taken += len(line) + 1
                    if self.role == "reader" and (seg, end) > self._seen:
                        self._seen = (seg, end)
                        self._pending += 1  # the writer counts appends in its own process
                self._read = (seg, end)
                start = nl + 1
        return out

    def _skip_corrupt_tail(self, seg: int, size: int) -> None:
        self._read = (seg, size)

    def rewind(self) -> None:
        """Read again from the acknowledged position (the forwarder's window was dropped)."""
        self._read = self._ack

    def _reader_fd(self, seg: int) -> int:
        if self._rfd is not None and self._rfd[0] == seg:
            return self._rfd[1]
        if self._rfd is not None:
            os.close(self._rfd[1])
        fd = os.open(self.dir / segment_name(seg), os.O_RDONLY)
        self._rfd = (seg, fd)
        return fd

    # --- acknowledgement ---------------------------------------------------
    def ack(self, through: SpoolRecord, count: int, known_end: dict[int, int] | None = None) -> None:
        """Kafka has every record up to and including ``through`` (``count`` records since the last ack)."""
        if known_end:
            self.known_end.update(known_end)
        self._ack = (through.segment, through.end)
        later = sorted(n for n in self._sizes if n > self._ack[0])
        if later and self._ack[1] >= self._sizes.get(self._ack[0], 0):
            self._ack = (later[0], 0)  # a finished segment fully acknowledged can go
            if self._read < self._ack:
                self._read = self._ack
        self._pending = max(0, self._pending - count)
        if self.role == "both" and self._pending == 0 and self._read == self._ack and self._ack[0] == self._active \
                and self._sizes.get(self._active, 0) >= ROLL_ON_DRAIN_BYTES and self._ack[1] == self._sizes[self._active]:
            self._new_segment(self._active + 1)
            self._ack = self._read = (self._active, 0)
        done = [n for n in self._sizes if n < self._ack[0]]
        # A checkpoint per ack costs a file write and rename per forwarder round; a stale one only means
        # re-checking (never re-sending) what Kafka has, so it is written at most every
        # CHECKPOINT_EVERY_S, and always before a segment it covers is deleted, and on close.
        now = time.monotonic()
        if done or now - self._checkpointed_at >= CHECKPOINT_EVERY_S:
            self._write_checkpoint()
        else:
            self._checkpoint_stale = True
        for n in done:
            if self._rfd is not None and self._rfd[0] == n:
                os.close(self._rfd[1])
                self._rfd = None
            self._unlink(n)
        self._gauges()

    def note_known_end(self, known_end: dict[int, int]) -> None:
        self.known_end.update(known_end)
        self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        self._checkpointed_at = time.monotonic()
        self._checkpoint_stale = False
        body = orjson.dumps({"segment": self._ack[0], "offset": self._ack[1],
                             "known_end": {str(p): o for p, o in sorted(self.known_end.items())}})
        tmp = self.dir / (CHECKPOINT + ".tmp")
        # No fsync: a stale checkpoint only means re-checking (never re-sending) what Kafka has.
        tmp.write_bytes(body)
        os.replace(tmp, self.dir / CHECKPOINT)

    def _load_checkpoint(self) -> tuple[int, int]:
        path = self.dir / CHECKPOINT
        if not path.exists():
            return 0, 0
        try:
            data = orjson.loads(path.read_bytes())
            seg, off = int(data["segment"]), int(data["offset"])
            self.known_end = {int(p): int(o) for p, o in dict(data.get("known_end") or {}).items()}
        except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            log.error("spool checkpoint %s is unreadable (%s); replaying every segment", path, exc)
            return 0, 0
        return seg, off

    # --- recovery helpers --------------------------------------------------
    def _list_segments(self) -> list[int]:
        out = []
        for p in self.dir.iterdir():
            name = p.name
            if name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX):
                with contextlib.suppress(ValueError):
                    out.append(int(name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)]))
        return out

    def _unlink(self, n: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / segment_name(n)).unlink()
        self._sizes.pop(n, None)

    def _truncate_torn_tail(self, n: int) -> None:
        path = self.dir / segment_name(n)
        size = self._sizes[n]
        if size == 0:
            return
        with path.open("rb") as f:
            back = min(size, 4 * 1024 * 1024)
            f.seek(size - back)
            tail = f.read(back)
        if tail.endswith(b"\n"):
            return
        last_nl = tail.rfind(b"\n")
        keep = size - back + last_nl + 1 if last_nl >= 0 else (0 if back == size else size - back)
        metrics.SPOOL_CORRUPT.inc()
        log.warning("spool segment %s: truncated a torn last line (%d bytes)", path.name, size - keep)
        os.truncate(path, keep)
        self._sizes[n] = keep

    def _count_pending(self) -> int:
        count = 0
        for n in sorted(self._sizes):
            if n < self._ack[0]:
                continue
            start = self._ack[1] if n == self._ack[0] else 0
            with (self.dir / segment_name(n)).open("rb") as f:
                f.seek(start)
                while chunk := f.read(1024 * 1024):
                    count += chunk.count(b"\n")
        return count

    def _gauges(self) -> None:
        metrics.SPOOL_BYTES.set(self.disk_bytes)
        if self.role != "writer":  # a writer without its reader does not know what Kafka has
            metrics.SPOOL_EVENTS.set(self._pending)


class SpoolSink:
    """The collector's :class:`router.storage.kafka.EventSink`: events go to the spool, then Kafka."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    async def send(self, event: Event) -> None:
        await self.spool.append([event])

    async def send_many(self, events: Sequence[Event], *, wait_durable: bool = True) -> None:
        await self.spool.append(events, wait_durable=wait_durable)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
