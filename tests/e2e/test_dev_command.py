"""`leadrouter dev`: the whole service on one machine, alerts on the console, nothing left behind.

Runs the real command as a subprocess (it starts its own broker, redis-server,
collector and worker processes), waits for the demo traffic to produce a Slack
and an email alert, interrupts it like Ctrl-C would, and then checks that every
process it started is gone and every port it printed is closed.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from router.dev.servers import broker_binary

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ALERTS_WITHIN_S = 60.0
REENGAGED_WITHIN_S = 150.0  # marked lost after ~5 s, back ~6 s later, then behind the Slack pacing queue
EXIT_WITHIN_S = 20.0
COMMAND = ["dev", "--duration", "170", "--seed", "7", "--rate", "25"]
# Settings that would make `dev` use servers other than its own.
FOREIGN_ENV = ("KAFKA_URL", "REDIS_URL", "SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN")

PORT_LINES = {
    "broker": re.compile(r"\bbroker\s+Tansu .* on 127\.0\.0\.1:(\d+)"),
    "redis": re.compile(r"\bredis\s+redis-server on 127\.0\.0\.1:(\d+)"),
    "collector": re.compile(r"\bcollector http://127\.0\.0\.1:(\d+)"),
    "slack": re.compile(r"\bslack\s+local Slack-format receiver on http://127\.0\.0\.1:(\d+)"),
    "smtp": re.compile(r"\bsmtp\s+local SMTP receiver on 127\.0\.0\.1:(\d+)"),
}
CONSOLE_LINE = re.compile(r"^\s*[\d.]+s\s+console\s+(http://127\.0\.0\.1:\d+/console/)\s.*one click\): "
                          r"(http://127\.0\.0\.1:\d+/console/sign-in\?token=(lra_[\w-]+))$")
WORKDIR_LINE = re.compile(r"logs in (/\S*leadrouter-dev-\S+)")


@dataclass
class DevRun:
    proc: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    queue: queue.Queue[str | None] = field(default_factory=queue.Queue)
    reader: threading.Thread | None = None

    def start_reader(self) -> None:
        def pump() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                self.queue.put(raw.decode(errors="replace").rstrip("\n"))
            self.queue.put(None)

        self.reader = threading.Thread(target=pump, name="dev-stdout", daemon=True)
        self.reader.start()

    def next_line(self, timeout: float) -> str | None:
        """The next output line; None at end of output; raises queue.Empty on timeout."""
        line = self.queue.get(timeout=max(timeout, 0.0))
        if line is not None:
            self.lines.append(line)
        return line

    def drain(self, timeout: float = 5.0) -> None:
        if self.reader is not None:
            self.reader.join(timeout)
        while True:
            try:
                line = self.queue.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.lines.append(line)

    def output(self, tail: int = 250) -> str:
        return "\n".join(self.lines[-tail:])


# --------------------------------------------------------------------------- /proc helpers


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is the state, rest[1] the ppid, rest[19] the start time (fields 3, 4 and 22).
    if rest[0] == "Z":
        return None  # a zombie runs nothing
    return int(rest[1]), int(rest[19])


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of ``root``."""
    table = {pid: st for pid in _pids() if (st := _stat(pid)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in found or pid not in table:
            continue
        found[pid] = table[pid][1]
        todo.extend(children.get(pid, []))
    return found


def still_running(tracked: dict[int, int]) -> dict[int, str]:
    """The tracked processes (same pid and start time) that are still alive, with their cmdline."""
    alive: dict[int, str] = {}
    for pid, started in tracked.items():
        st = _stat(pid)
        if st is not None and st[1] == started:
            alive[pid] = _cmdline(pid)
    return alive


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def processes_of(workdir: Path, broker_bin: str, broker_port: int | None) -> dict[int, str]:
    """Live processes that belong to this dev run: cwd inside its work dir, its work dir on the
    command line (redis-server --dir), or the broker binary listening on its port."""
    root = str(workdir.resolve())
    found: dict[int, str] = {}
    for pid in _pids():
        if pid == os.getpid() or _stat(pid) is None:
            continue
        cwd, cmd = _cwd(pid), _cmdline(pid)
        in_dir = cwd == root or cwd.startswith(root + os.sep)
        mentions_dir = root in cmd
        our_broker = broker_bin in cmd and broker_port is not None and f"127.0.0.1:{broker_port}" in cmd
        if in_dir or mentions_dir or our_broker:
            found[pid] = f"cwd={cwd} cmd={cmd}"
    return found


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _kill(pid: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- the test


def test_dev_delivers_alerts_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADROUTER_") and k not in FOREIGN_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.cli.main", *COMMAND],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=tmp_path, env=env, start_new_session=True,
    )
    run = DevRun(proc)
    run.start_reader()
    tracked: dict[int, int] = {}
    workdir: Path | None = None
    ports: dict[str, int] = {}
    broker_bin = broker_binary()
    passed = False

    seen_dirs: set[Path] = set()  # work dirs of dev's children, for logs when the 'logs in' line never came

    def context() -> str:
        logs = ""
        for d in ([workdir] if workdir is not None else sorted(seen_dirs)):
            for name in ("collector.log", "worker.log"):
                path = d / name
                if path.exists():
                    tail = "\n".join(path.read_text(errors="replace").splitlines()[-30:])
                    logs += f"\n--- {name} (tail)\n{tail}"
        return f"\n--- leadrouter dev output (tail)\n{run.output()}{logs}"

    try:
        started = time.monotonic()
        saw_slack = saw_email = False
        saw_lost = saw_back = saw_reengaged = False
        ended = False
        while not (saw_slack and saw_email and saw_reengaged):
            limit = ALERTS_WITHIN_S if not (saw_slack and saw_email) else REENGAGED_WITHIN_S
            remaining = started + limit - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = run.next_line(remaining)
            except queue.Empty:
                break
            if line is None:
                ended = True
                break
            saw_slack = saw_slack or "[slack" in line
            saw_email = saw_email or "[email to" in line
            saw_lost = saw_lost or bool(re.search(r"\bdemo +.* marked closed-lost \(", line))
            saw_back = saw_back or bool(re.search(r"\bdemo +.* is back: /pricing 3 times", line))
            saw_reengaged = saw_reengaged or bool(
                re.search(r"\[slack [^]]*\] Re-engaged lead: .* — closed-lost on \d{4}-\d\d-\d\d \(", line))
            for name, pattern in PORT_LINES.items():
                if name not in ports and (m := pattern.search(line)):
                    ports[name] = int(m.group(1))
            if workdir is None and (m := WORKDIR_LINE.search(line)):
                workdir = Path(m.group(1))
            if proc.poll() is None:
                tracked.update(descendants(proc.pid))
                for pid in tracked:
                    if m := re.match(r"(.*/leadrouter-dev-[^/]+)", _cwd(pid)):
                        seen_dirs.add(Path(m.group(1)))
        elapsed = time.monotonic() - started
        assert not ended, f"leadrouter dev exited early with code {proc.wait(5)}{context()}"
        assert saw_slack and saw_email, (
            f"no {'Slack' if not saw_slack else 'email'} alert within {ALERTS_WITHIN_S:.0f}s "
            f"(slack={saw_slack}, email={saw_email}){context()}")
        assert saw_reengaged, (
            f"no re-engagement alert within {REENGAGED_WITHIN_S:.0f}s (a lead marked lost: {saw_lost}, "
            f"brought back: {saw_back}){context()}")
        assert workdir is not None, f"no 'logs in /tmp/leadrouter-dev-…' line{context()}"
        assert workdir.is_dir(), f"work dir {workdir} does not exist{context()}"
        assert {"broker", "redis", "collector"} <= set(ports), f"ports printed: {ports}{context()}"
        for name in ("broker", "redis", "collector"):
            assert accepts(ports[name]), f"{name} port {ports[name]} is not listening while dev runs{context()}"

        # Everything dev started, as it runs now: broker, redis, collector and worker at least.
        tracked.update(descendants(proc.pid))
        running = still_running(tracked)
        assert len(running) >= 4, f"expected broker, redis, collector and worker under dev, got {running}{context()}"
        assert any(broker_bin in cmd for cmd in running.values()), f"no broker under dev: {running}{context()}"
        assert any("redis-server" in cmd for cmd in running.values()), f"no redis under dev: {running}{context()}"
        of_run = processes_of(workdir, broker_bin, ports["broker"])
        assert set(running) <= set(of_run), (
            f"the /proc scan must recognise every child of dev: missed "
            f"{ {p: running[p] for p in set(running) - set(of_run)} }{context()}")

        # Ctrl-C.
        os.kill(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            run.drain(0.5)
            pytest.fail(f"leadrouter dev did not exit within {EXIT_WITHIN_S:.0f}s of SIGINT{context()}")
        run.drain()
        assert code == 0, f"leadrouter dev exited with code {code} after SIGINT{context()}"
        assert any("stopped; nothing left running" in line for line in run.lines), (
            f"no 'stopped' line after SIGINT{context()}")

        left = still_running(tracked)
        assert not left, f"processes started by dev still run after it exited: {left}{context()}"
        leftovers = processes_of(workdir, broker_bin, ports["broker"])
        assert not leftovers, f"processes of this dev run are still alive: {leftovers}{context()}"
        open_ports = {name: port for name, port in ports.items() if accepts(port)}
        assert not open_ports, f"ports still accept connections after dev exited: {open_ports}{context()}"
        assert elapsed < REENGAGED_WITHIN_S
        passed = True
    finally:
        if proc.poll() is None:
            _kill(proc.pid, group=True)
            proc.wait(10)
        # dev starts its servers in sessions of their own: if it failed to stop them, do it here.
        for pid in still_running(tracked):
            _kill(pid, group=True)
            _kill(pid, group=False)
        if workdir is not None:
            for pid in processes_of(workdir, broker_bin, ports.get("broker")):
                _kill(pid, group=False)
        run.drain(1.0)
        if proc.stdout is not None:
            proc.stdout.close()
        if passed and workdir is not None and workdir.name.startswith("leadrouter-dev-"):
            shutil.rmtree(workdir, ignore_errors=True)


def test_dev_with_rate_zero_runs_everything_but_the_demo(tmp_path: Path) -> None:
    """`--rate 0`: no demo traffic (it used to divide by zero); the collector takes the user's own hits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADROUTER_") and k not in FOREIGN_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.cli.main", "dev", "--rate", "0", "--duration", "90"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=tmp_path, env=env, start_new_session=True,
    )
    run = DevRun(proc)
    run.start_reader()
    tracked: dict[int, int] = {}
    try:
        collector_port: int | None = None
        started = time.monotonic()
        while not any(line.startswith("demo") or " demo " in line for line in run.lines):
            line = run.next_line(started + ALERTS_WITHIN_S - time.monotonic())
            assert line is not None, f"leadrouter dev exited early with code {proc.wait(5)}\n{run.output()}"
            if m := PORT_LINES["collector"].search(line):
                collector_port = int(m.group(1))
            tracked.update(descendants(proc.pid))
        assert collector_port is not None, run.output()
        assert any("demo     off (--rate 0)" in line for line in run.lines), run.output()
        # The console's one-click ops sign-in link: the sign-in form with the ops token filled in.
        console = [m for line in run.lines if (m := CONSOLE_LINE.search(line))]
        assert console, run.output()
        sign_in = console[0].group(2)
        with urllib.request.urlopen(sign_in, timeout=10) as resp:  # loopback http only
            page = resp.read().decode()
            assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        assert f'value="{console[0].group(3)}"' in page and 'action="/console/sign-in"' in page
        # The user's own traffic: one page view through the collector dev started.
        with socket.create_connection(("127.0.0.1", collector_port), timeout=5) as s:
            s.sendall(b"GET /t/p.gif?uid=own-traffic&url=https%3A%2F%2Fexample.com%2F HTTP/1.1\r\n"
                      b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
            reply = s.recv(64)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        assert proc.poll() is None, run.output()
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(EXIT_WITHIN_S)
        run.drain()
        assert code == 0, f"exit code {code}\n{run.output()}"
        assert any("stopped; nothing left running" in line for line in run.lines), run.output()
        assert not any("ZeroDivisionError" in line or "Traceback" in line for line in run.lines), run.output()
    finally:
        if proc.poll() is None:
            _kill(proc.pid, group=True)
            proc.wait(10)
        for pid in still_running(tracked):
            _kill(pid, group=True)
            _kill(pid, group=False)
        run.drain(1.0)
        if proc.stdout is not None:
            proc.stdout.close()
