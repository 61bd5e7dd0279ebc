"""Benchmark: alert emails through ``SmtpNotifier``, with and without connection reuse.

    python -m bench.smtp_send [--alerts 2000] [--concurrency 4] [--no-markdown]

A local aiosmtpd receiver (``router.dev.receivers.SmtpReceiver``) runs in a child
process, so this process's CPU time is the sending side only: rendering the
email (``render_email``), flattening it, smtplib and the hop to the worker thread
(``asyncio.to_thread``), as the worker's alert agent does them.  ``--concurrency``
sends run at once (the agent runs 4).  Each mode sends ``--alerts`` realistic
alerts (reasons, activity, account, action links) after a warm-up, and checks the
receiver got every one exactly once.

Modes: plain SMTP, and STARTTLS with AUTH (a self-signed certificate made for the
run, verified by the client), each three ways: as before this change (a
connection per message, and ``render_email`` with the stdlib's header factory),
a connection per message (``LEADROUTER_SMTP_POOL_IDLE_S=0``) and with reuse (the
default).  Reported: alerts/s, CPU µs per alert in this process, in the
receiver, and connections opened.  Also ``render_email`` alone, with the stdlib's
header factory (as before) and with the one that builds header classes and
repeated values once (``router.alerts.render._HeaderClasses``).

Rewrites the ``<!-- smtp send -->`` section of BENCHMARKS.md (``--no-markdown``: print only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.policy
import ipaddress
import json
import logging
import os
import platform
import ssl
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import HeaderRegistry
from pathlib import Path
from typing import Any

from bench.report import write_section
from models.lead import Alert, Assignment, LeadView, Reason, Rep, RoutingDecision, Stage
from router.alerts import render
from router.alerts.notifiers import SmtpNotifier
from router.dev.receivers import SmtpReceiver

SECTION = "smtp send"
ROOT = Path(__file__).resolve().parents[1]
SENDER = "LeadRouter <leadrouter@example.test>"
USER, PASSWORD = "leadrouter", "bench-s3cret"
TS = 1795372874.0


# --------------------------------------------------------------------------- alerts


def make_alert(n: int) -> Alert:
    """An alert as the worker sends one: reasons, recent activity, an account and action links."""
    rep = Rep(f"r{n % 7}", "Rita Rep", f"rep{n % 7}@example.test", "enterprise", f"U0REP{n % 7}")
    decision = RoutingDecision("enterprise", "big-companies", "v7", ("root", "employees>=1000"))
    reasons = (
        Reason("demo_request", 50, "e3", "form_fill", TS, "filled form demo-request", True),
        Reason("docs_deep", 25, "e7", "page_view", TS - 100, "read 6 docs pages"),
        Reason("webinar", 20, "e6", "form_fill", TS - 200, "registered webinar"),
        Reason("case_study", 15, "e4", "page_view", TS - 400, "viewed /customers"),
        Reason("pricing_view", 10, "e1", "page_view", TS - 600, "viewed /pricing"),
    )
    recent = (
        {"type": "page_view", "ts": TS - 74, "url": "https://www.example.test/pricing", "title": "Pricing"},
        {"type": "email_open", "ts": TS - 30, "campaign": "q3-nurture"},
        {"type": "form_fill", "ts": TS, "form_id": "demo-request", "detail": "plan=enterprise"},
    )
    account = {
        "name": "Acme", "domain": "acme.test", "intent": 72.4, "active_people": 3,
        "members": [
            {"name": "Bob Stone", "title": "CFO", "email": "bob@acme.test", "last_active": TS - 3600},
            {"name": "", "title": "Engineer", "email": "eve@acme.test", "last_active": TS - 7200},
        ],
    }
    links = {
        "accept": f"https://admin.example.test/v1/leads/lead-{n}/accept?t=abc",
        "reject": f"https://admin.example.test/v1/leads/lead-{n}/reject?t=abc",
        "lead": f"https://admin.example.test/v1/leads/lead-{n}",
    }
    return Alert(
        assignment=Assignment(f"L{n:08d}:1", f"lead-{n}", 1, rep, decision, TS),
        lead=LeadView(f"lead-{n}", f"person{n}@acme.test", 104.6, Stage.MQL,
                      {"name": f"Person {n}", "company": "Acme", "job_title": "Head of Ops", "grade": "A"}, reasons),
        threshold=100, trigger="hand-raiser form demo-request", recent=recent, account=account, links=links,
    )


# --------------------------------------------------------------------------- the receiver (child process)


async def _serve(cert: str | None, key: str | None) -> None:
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd logs every connection (and AUTH)
    kwargs: dict[str, Any] = {}
    if cert and key:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        kwargs = {"tls_context": ctx, "require_starttls": True, "users": {USER: PASSWORD}, "auth_required": True}
    async with SmtpReceiver(**kwargs) as smtp:
        seen: dict[str, int] = {}

        def count(msg: Any) -> None:
            aid = str(msg["X-Leadrouter-Assignment"])
            seen[aid] = seen.get(aid, 0) + 1

        smtp.on_message = count
        print(smtp.port, flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "stats":
                await asyncio.sleep(0.2)  # messages land on this loop via call_soon_threadsafe
                dupes = sum(1 for c in seen.values() if c > 1)
                print(json.dumps({"messages": len(smtp.messages), "unique": len(seen), "duplicates": dupes,
                                  "connections": smtp.connections}), flush=True)


@dataclass
class Receiver:
    proc: subprocess.Popen[str]
    port: int

    def stats(self) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def receiver(cert: Path | None, key: Path | None) -> Iterator[Receiver]:
    cmd = [sys.executable, "-m", "bench.smtp_send", "_receiver"]
    if cert and key:
        cmd += ["--cert", str(cert), "--key", str(key)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield Receiver(proc, int(proc.stdout.readline()))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (EC P-256), as the TLS tests make one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Run:
    mode: str
    reuse: bool
    stock_headers: bool
    alerts: int
    wall_s: float
    cpu_s: float
    receiver_cpu_s: float
    connections: int

    @property
    def per_s(self) -> float:
        return self.alerts / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.alerts * 1e6

    @property
    def receiver_cpu_us(self) -> float:
        return self.receiver_cpu_s / self.alerts * 1e6


async def _send_all(notifier: SmtpNotifier, alerts: list[Alert], concurrency: int) -> None:
    queue = list(reversed(alerts))

    async def worker() -> None:
        while queue:
            await notifier.send(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


@contextlib.contextmanager
def stock_header_factory(on: bool) -> Iterator[None]:
    """render_email with the stdlib's header factory (as before ``_HeaderClasses``) while ``on``."""
    ours = render._EMAIL_POLICY
    if on:
        render._EMAIL_POLICY = email.policy.default.clone(max_line_length=998, header_factory=HeaderRegistry())
    try:
        yield
    finally:
        render._EMAIL_POLICY = ours


async def measure(mode: str, reuse: bool, stock: bool, n: int, concurrency: int, rx: Receiver,
                  cert: Path | None) -> Run:
    tls = cert is not None
    notifier = SmtpNotifier("127.0.0.1", rx.port, SENDER, tls, USER if tls else "", PASSWORD if tls else "", 10.0,
                            ca_file=str(cert) if cert else "", idle_s=30.0 if reuse else 0.0)
    first = (1_000_000 if reuse else 0) + (2_000_000 if tls else 0) + (4_000_000 if stock else 0)  # unique ids
    base = rx.stats()
    try:
        await _send_all(notifier, [make_alert(first + 900_000 + i) for i in range(50)], concurrency)  # warm-up
        alerts = [make_alert(first + i) for i in range(n)]
        before = rx.stats()
        with stock_header_factory(stock):
            rx_cpu0, cpu0, wall0 = rx.cpu_s(), time.process_time(), time.perf_counter()
            await _send_all(notifier, alerts, concurrency)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        after = rx.stats()
        rx_cpu = rx.cpu_s() - rx_cpu0
    finally:
        await notifier.aclose()
    got = after["messages"] - before["messages"]
    if got != n or after["duplicates"] != before["duplicates"]:
        raise SystemExit(f"{mode}: the receiver got {got} messages for {n} alerts "
                         f"({after['duplicates']} duplicated)")
    return Run(mode, reuse, stock, n, wall, cpu, rx_cpu, after["connections"] - base["connections"])


def render_us(repeat: int = 5, number: int = 1000) -> tuple[float, float]:
    """µs per ``render_email`` with the stdlib's header factory (before) and with ours (now)."""
    alerts = [make_alert(i) for i in range(number)]

    def once() -> None:
        for a in alerts:
            render.render_email(a, SENDER)

    out = []
    for stock in (True, False):
        with stock_header_factory(stock):
            out.append(min(timeit.repeat(once, number=1, repeat=repeat)) / number * 1e6)
    return out[0], out[1]


# --------------------------------------------------------------------------- report


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def markdown(runs: list[Run], render_before: float, render_after: float, args: argparse.Namespace,
             took_s: float, load_at_start: str) -> str:
    lines = [
        f"## Alert email: SMTP connection reuse ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"Machine: {platform.machine()}, CPython {platform.python_version()}, Linux {platform.release()}; "
        f"{os.cpu_count()} CPUs shared with other work (load average at the start: {load_at_start}; "
        f"at the end: {_load()}).",
        f"Command: `python -m bench.smtp_send --alerts {args.alerts} --concurrency {args.concurrency}` "
        f"(took {took_s:.0f} s)",
        "",
        "`SmtpNotifier.send` as the worker's alert agent calls it ("
        f"{args.concurrency} at once), to a local aiosmtpd receiver in another process; every alert "
        "arrived exactly once. CPU is this process's (render, flatten, smtplib, thread hop, and the kernel's "
        "loopback TCP work done on its behalf; all threads), the receiver's separately. The receiver "
        "(aiosmtpd parsing every message) shares the cores and bounds alerts/s, so the CPU columns are the "
        "ones to compare.",
        "",
        "| mode | connections opened (warm-up included) | alerts/s | CPU µs per alert | receiver CPU µs per alert |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        if r.stock_headers:
            how = "**before**: a connection per message, stdlib header factory"
        elif r.reuse:
            how = "**now**: connections reused (default, `LEADROUTER_SMTP_POOL_IDLE_S=30`)"
        else:
            how = "a connection per message (`LEADROUTER_SMTP_POOL_IDLE_S=0`)"
        lines.append(f"| {r.mode}: {how} | {r.connections:,} | {r.per_s:,.0f} | {r.cpu_us:,.0f} | "
                     f"{r.receiver_cpu_us:,.0f} |")
    lines += [
        "",
        f"`render_email` alone (µs per alert, best of 5 x 1,000): {render_before:,.0f} with the stdlib's header "
        f"factory (before), {render_after:,.0f} with header classes and repeated header values built once "
        "(`router/alerts/render.py` `_HeaderClasses`); same bytes out.",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    started, load_at_start = time.perf_counter(), _load()
    before, after = render_us()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(Path(tmp))
        for mode, c, k in (("plain SMTP", None, None), ("STARTTLS + AUTH", cert, key)):
            with receiver(c, k) as rx:
                for reuse, stock in ((False, True), (False, False), (True, False)):
                    run = await measure(mode, reuse, stock, args.alerts, args.concurrency, rx, c)
                    print(f"{mode:16} reuse={reuse!s:5} stock headers={stock!s:5} {run.connections:5} connections  "
                          f"{run.per_s:7.0f} alerts/s  "
                          f"{run.cpu_us:6.0f} µs CPU/alert  receiver {run.receiver_cpu_us:6.0f} µs/alert", flush=True)
                    runs.append(run)
    print(f"render_email: {before:.0f} µs (stdlib header factory) -> {after:.0f} µs", flush=True)
    return markdown(runs, before, after, args, time.perf_counter() - started, load_at_start)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_receiver"]:
        p = argparse.ArgumentParser(prog="bench.smtp_send _receiver")
        p.add_argument("--cert")
        p.add_argument("--key")
        a = p.parse_args(argv[1:])
        asyncio.run(_serve(a.cert, a.key))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.smtp_send", description=__doc__.split("\n\n")[0])
    p.add_argument("--alerts", type=int, default=2000, help="alerts per mode, after 50 to warm up (default 2000)")
    p.add_argument("--concurrency", type=int, default=4, help="sends at once, as the alert agent (default 4)")
    p.add_argument("--no-markdown", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    text = asyncio.run(main_async(args))
    if not args.no_markdown:
        write_section(ROOT / "BENCHMARKS.md", text, SECTION)
        print(f"wrote the <!-- {SECTION} --> section of BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
