"""``leadrouter bench``: the full-path benchmark (``bench/full_path.py``).

    leadrouter bench [--events 100000] [--phases worker,collector,latency,churn] ...

The harness is the top-level ``bench`` package, installed with the project
(``pip install -e ".[dev]"``, as ``scripts/bootstrap.sh`` does) and runnable as
``python -m bench.full_path`` too; like ``leadrouter dev`` it needs the ``local``
extra, and the production image has neither.  By default it writes into the
source checkout the ``bench`` package lives in (``BENCHMARKS.md`` and
``bench/results/``), whatever the working directory; outside a checkout, into
the working directory.  The options are defined here, once, for both entry points.

Enabled by listing ``"router.cli.bench"`` in ``router.cli.main.COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shlex
import sys
from pathlib import Path

from router.settings import Settings

PHASES = ("worker", "collector", "latency", "light", "taobao", "churn")
DEFAULT_PHASES = ("worker", "collector", "latency", "light", "taobao")  # churn (bench/churn.py) runs when asked for


def checkout_root() -> Path | None:
    """The source checkout the ``bench`` package is in (an editable install, or run from the root), if any.

    Found without importing ``bench`` (which needs the ``local`` extra)."""
    try:
        spec = importlib.util.find_spec("bench")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "bench" / "full_path.py").is_file() else None


def output_root() -> Path:
    """Where the results go by default: the checkout, else the working directory."""
    return checkout_root() or Path.cwd()


def _phases(text: str) -> list[str]:
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PHASES]
    if unknown or not wanted:
        msg = f"unknown phase(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PHASES)}"
        raise argparse.ArgumentTypeError(msg)
    return [p for p in PHASES if p in wanted]


def _speeds(text: str) -> list[float]:
    try:
        speeds = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        speeds = []
    if not speeds or any(x <= 0 for x in speeds):
        msg = f"--taobao-speeds {text!r}: give speed-ups above 0, comma-separated, e.g. 10,100"
        raise argparse.ArgumentTypeError(msg)
    return speeds


def _taobao_default() -> Path:
    return (checkout_root() or Path.cwd()).parent / "shared" / "datasets" / "taobao_userbehavior_events.csv"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by ``leadrouter bench`` and ``python -m bench.full_path``)."""
    g = p.add_argument_group("what to run")
    g.add_argument("--phases", type=_phases, default=list(DEFAULT_PHASES), metavar="LIST",
                   help="comma-separated phases: worker (backlog: bare faust, 1 and 2 workers, raw Redis), "
                        "collector (pixel req/s and latency), latency (event to alert), light (cores idle and at 100 events/s, with event-to-alert), taobao (event to alert on "
                        "the real Taobao clickstream at 10x and 100x; bench/taobao.py), churn (Redis memory "
                        "over simulated weeks of anonymous visitors, with expiry and without; bench/churn.py); "
                        "default worker,collector,latency,light,taobao")
    g.add_argument("--seed", type=int, default=1, help="traffic seed (default 1)")
    g.add_argument("--visitors", type=int, default=30_000, help="visitor population (default 30,000)")
    g.add_argument("--accounts", type=int, default=300, help="accounts, i.e. company domains (default 300)")
    w = p.add_argument_group("worker phase")
    w.add_argument("--events", type=int, default=100_000,
                   help="events in the pre-filled backlog (default 100,000)")
    w.add_argument("--worker-split", action="store_true",
                   help="also drain the backlog with one scoring-role and one alerts-role worker process "
                        "(LEADROUTER_WORKER_ROLE): events/s and each process's CPU beside one worker's "
                        "(off by default: about a minute more)")
    c = p.add_argument_group("collector phase")
    c.add_argument("--collector-seconds", type=float, default=15.0,
                   help="seconds per collector run, after a 2 s warm-up (default 15)")
    c.add_argument("--collector-rate", type=float, default=0.0,
                   help="offered pixel requests/s for the latency run (default 0: half the saturated rate "
                        "the closed-loop run measured, as issue 15 asks)")
    c.add_argument("--concurrency", type=int, default=64, help="load-generator connections (default 64)")
    lat = p.add_argument_group("latency phase")
    lat.add_argument("--latency-seconds", type=float, default=60.0,
                     help="seconds of steady mixed traffic (default 60)")
    lat.add_argument("--latency-rate", type=float, default=1000.0, help="events/s offered (default 1,000)")
    lat.add_argument("--latency-warmup", type=float, default=3.0,
                     help="seconds at the start whose alerts are not counted (default 3)")
    lat.add_argument("--latency-workers", type=int, default=1, help="worker processes (default 1)")
    li = p.add_argument_group("light phase")
    li.add_argument("--light-rate", type=float, default=100.0, help="events/s offered after idle, for --latency-seconds (default 100)")
    li.add_argument("--light-idle-seconds", type=float, default=30.0,
                    help="seconds with no traffic at all, for idle CPU (default 30)")
    tb = p.add_argument_group("taobao phase (the real Taobao UserBehavior clickstream, replayed sped up)")
    tb.add_argument("--taobao-path", type=Path, default=_taobao_default(),
                    help="the clickstream CSV (default ../shared/datasets/taobao_userbehavior_events.csv)")
    tb.add_argument("--taobao-speeds", type=_speeds, default=[10.0, 100.0], metavar="LIST",
                    help="comma-separated speed-ups over real time (default 10,100)")
    tb.add_argument("--taobao-data-seconds", type=float, default=0.0,
                    help="seconds of data to replay, the densest stretch (default: 1 h at 10x, 8 h at 100x)")
    g.add_argument("--slack-pacing", choices=("off", "settings"), default="off",
                   help="off (default): the workers do not pace Slack messages (LEADROUTER_SLACK_RATE_PER_S=0), "
                        "since the local receiver has no rate limit and pacing at 1 message/s per channel "
                        "would measure the queue in front of Slack; settings: pace as configured")
    add_churn_arguments(p.add_argument_group("churn phase"), prefix="churn-")
    o = p.add_argument_group("output")
    root = output_root()
    o.add_argument("--markdown", type=Path, default=root / "BENCHMARKS.md",
                   help="file whose '<!-- full path -->' section is rewritten (default BENCHMARKS.md)")
    o.add_argument("--no-markdown", action="store_true", help="do not write the markdown section")
    o.add_argument("--plot", type=Path, default=root / "bench" / "results" / "full_path.png",
                   help="PNG to write (default bench/results/full_path.png)")
    o.add_argument("--no-plot", action="store_true", help="do not write the plot")
    o.add_argument("--json", type=Path, default=None, help="also write the raw figures as JSON here")
    o.add_argument("--keep-workdir", action="store_true",
                   help="keep the temporary folder with every process's log (kept anyway when a phase fails)")


def add_churn_arguments(p: argparse._ActionsContainer, prefix: str = "") -> None:
    """The churn phase's options (``--churn-...`` here, unprefixed for ``python -m bench.churn``)."""
    p.add_argument(f"--{prefix}days", type=int, default=84, help="simulated days (default 84: 12 weeks)")
    p.add_argument(f"--{prefix}ttl-days", type=float, default=30.0,
                   help="anonymous TTL in simulated days (default 30; the service's default is 90)")
    p.add_argument(f"--{prefix}day-seconds", type=float, default=3.0,
                   help="real seconds per simulated day, the scale of every TTL (default 3)")
    p.add_argument(f"--{prefix}visitors-per-day", type=int, default=200,
                   help="new anonymous visitors a day (default 200)")
    p.add_argument(f"--{prefix}no-baseline", dest=f"{prefix.replace('-', '_')}baseline", action="store_false",
                   help="skip the run with expiry off (same traffic into a second redis-server)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench``; its parser sets ``fn(settings, args) -> int``."""
    p = sub.add_parser("bench", help="benchmark the full path: collector → Kafka → worker → Redis → alerts",
                       description="Start a private broker and Redis, replay realistic traffic through the real "
                                   "processes, print the figures against their baselines and targets, and "
                                   "rewrite the '<!-- full path -->' section of BENCHMARKS.md. Run it on a quiet "
                                   "machine; the defaults take about 5 minutes.")
    add_arguments(p)
    p.set_defaults(fn=cmd_bench)


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from router.cli.local import require_local_extra

    require_local_extra("bench")
    try:
        import bench.full_path as full_path
    except ModuleNotFoundError as exc:
        if exc.name != "bench":
            raise
        print("leadrouter bench: the bench package is not installed; it comes with a source checkout of the "
              'repository: pip install -e ".[dev]" there, or run `python -m bench.full_path` from its root',
              file=sys.stderr)
        return 2

    logging.getLogger().setLevel(logging.WARNING)  # the bench prints its own progress
    return full_path.run_from_args(settings, args, command="leadrouter " + shlex.join(sys.argv[1:]))
