"""Collector with its spool forwarder inline vs in a child process, interleaved (BENCHMARKS.md, "collector forwarder").

    python -m bench.collector_forwarder_ab [ROUNDS [RATE [SECONDS]]]     (default 4 3000 8)

One collector of each LEADROUTER_SPOOL_FORWARDER mode (inline, process) is started once; rounds alternate
between them (the order flips every round), each a closed-loop run (64 connections) and a run at RATE
requests/s offered, so both see the same background load on a shared machine.  The forwarder child's CPU
counts with its collector's.  It reuses bench.full_path's setup (broker, Redis, load generator) by running
its collector phase with this one.  Prints one line per run and the medians.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import sys

import bench.full_path as fp
from bench.report import Results
from router.dev.servers import free_port, wait_for_port
from router.storage.kafka import ensure_topics

_ARGS = sys.argv[1:]
ROUNDS = int(_ARGS[0]) if _ARGS else 4
RATE = float(_ARGS[1]) if len(_ARGS) > 1 else 3000.0
SECONDS = float(_ARGS[2]) if len(_ARGS) > 2 else 8.0


async def phase(self: fp.Bench, r: Results) -> None:
    """The collector phase, replaced: the two modes interleaved."""
    o = self.opts
    collectors = {}
    for mode in ("inline", "process"):
        port = free_port()
        s = self.settings_for(f"c{mode}", collector_port=port, public_url=f"http://127.0.0.1:{port}",
                              spool_forwarder=mode, spool_forwarder_metrics_port=free_port())
        await ensure_topics(s.kafka)
        p = self._spawn_service("collector", s, f"c{mode}", port)
        await asyncio.to_thread(wait_for_port, port, 30.0, p.proc)
        collectors[mode] = (port, p)
    await asyncio.sleep(2.0)
    res: dict[tuple[str, str], list[tuple[float, float, float, float, float]]] = {}
    try:
        for i in range(ROUNDS):
            order = ("inline", "process") if i % 2 == 0 else ("process", "inline")
            for mode in order:
                port, p = collectors[mode]
                kids = fp.child_pids(p.pid) if mode == "process" else []
                for kind, rate in (("closed", 0.0), ("rate", RATE)):
                    sp = fp.LoadSpec(host="127.0.0.1", port=port, mode=kind, mix="pixel", concurrency=o.concurrency,
                                     duration_s=SECONDS, warmup_s=1.0, rate=rate, seed=o.seed + i,
                                     visitors=o.visitors, accounts=o.accounts, token_secret=self.secret)
                    out, cpu = await self.load(f"{mode} {kind} {i}", sp, [p], kids)
                    h = self.http_run(mode, sp, out, cpu)
                    window = out["wall_end"] - out["wall_start"]
                    main_cpu = cpu.get(p.pid, 0.0) / window
                    fwd_cpu = sum(v for k, v in cpu.items() if k != p.pid) / window
                    row = (h.rps, h.latency.p50, h.latency.p99, (main_cpu + fwd_cpu) / max(h.rps, 1) * 1e6,
                           main_cpu / max(h.rps, 1) * 1e6)
                    res.setdefault((mode, kind), []).append(row)
                    print(f"round {i} {mode:7s} {kind:6s} rps {h.rps:8.0f} p50 {h.latency.p50:6.2f} p99 {h.latency.p99:7.2f} "
                          f"cpu/req {row[3]:5.0f} us (collector process {row[4]:5.0f} us, cores {main_cpu:.2f}+{fwd_cpu:.2f}) "
                          f"load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for _port, p in collectors.values():
            await self.stop(p)
    print("medians (rps, p50 ms, p99 ms, cpu/req us total, cpu/req us collector process)")
    for key, rows in sorted(res.items()):
        med = [statistics.median(c) for c in zip(*rows, strict=True)]
        print(key, " ".join(f"{m:.2f}" for m in med), flush=True)


def main() -> int:
    fp.Bench.phase_collector = phase  # type: ignore[method-assign]
    return fp.main(["--phases", "collector", "--no-markdown", "--collector-seconds", str(SECONDS)])


if __name__ == "__main__":
    sys.exit(main())
