"""Baselines that bound the full-path figures (see ``bench.full_path``).

* ``python -m bench.baselines faust``: a bare faust agent on the events topic
  that only counts raw messages.  It is built like the worker
  (:class:`router.worker.app.LeadRouterApp`, so the same ``fetch_max_wait_ms``
  override; same session timeout, offset reset, raw serializers and
  ``stream.take(worker_batch_size, within=worker_batch_window_s)``), and
  reads its settings from the environment (``LEADROUTER_*``) like the worker.
  ``GET /count`` on ``worker_web_port`` answers ``{"count": N}``.
* ``python -m bench.baselines http --port P``: a bare aiohttp server answering
  ``GET /t/p.gif`` with the collector's GIF and headers and nothing else: what
  the same load generator gets from aiohttp alone.
* :func:`raw_redis_step` (called in the bench process): one Lua call per event,
  pipelined per batch, as in ``bench/scoring_step.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from redis.asyncio import Redis

from router.settings import Settings, load_settings

if TYPE_CHECKING:
    from router.worker.app import LeadRouterApp


def create_bare_faust_app(settings: Settings) -> LeadRouterApp:
    """A faust app configured like the worker's, with one agent that counts raw messages."""
    import faust
    from faust.web import Request, Response, View

    from router.worker.app import new_app

    app = new_app(settings)
    topic = app.topic(settings.kafka.topic_events, value_serializer="raw", key_serializer="raw",
                      partitions=settings.kafka.topic_partitions)
    state = {"count": 0, "first": 0.0, "last": 0.0}

    @app.agent(topic)
    async def count_events(stream: faust.StreamT[bytes]) -> None:
        async for batch in stream.take(settings.worker.batch_size, within=settings.worker.batch_window_s):
            now = time.time()
            if not state["count"]:
                state["first"] = now
            state["count"] += len(batch)
            state["last"] = now

    @app.page("/count")
    async def count_page(self: View, request: Request) -> Response:
        return self.json(state)

    return app


def run_bare_faust(settings: Settings) -> None:
    """Run the bare agent until SIGINT/SIGTERM (like ``leadrouter worker``)."""
    import faust

    app = create_bare_faust_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def create_gif_app() -> web.Application:
    """``GET /t/p.gif`` answering the collector's GIF with its headers; nothing else."""
    from router.ingest.request import GIF, GIF_HEADERS

    async def pixel(request: web.Request) -> web.Response:
        return web.Response(body=GIF, headers=GIF_HEADERS)

    app = web.Application()
    app.router.add_get("/t/p.gif", pixel)
    return app


async def serve_gif(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_gif_app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
        await stop.wait()
    finally:
        await runner.cleanup()


async def raw_redis_step(redis: Redis, event_ids: Sequence[str], batch: int) -> float:
    """Events/s of one no-op Lua call per event (keyed by its id), pipelined per ``batch``."""
    noop = redis.register_script("return 1")
    await noop(keys=["warm-up"], args=["warm-up"])  # load the script once, outside the timing
    t0 = time.perf_counter()
    for i in range(0, len(event_ids), batch):
        pipe = redis.pipeline(transaction=False)
        for eid in event_ids[i:i + batch]:
            await noop(keys=[eid], args=[eid], client=pipe)
        await pipe.execute()
    elapsed = time.perf_counter() - t0
    return len(event_ids) / elapsed if elapsed > 0 else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("faust", help="bare faust agent counting raw messages (settings from LEADROUTER_*)")
    h = sub.add_parser("http", help="bare aiohttp GIF server")
    h.add_argument("--host", default="127.0.0.1")
    h.add_argument("--port", type=int, required=True)
    args: Any = p.parse_args(argv)
    if args.what == "faust":
        import logging

        settings = load_settings()
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        run_bare_faust(settings)
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_gif(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
