"""Browser tests: the ops console in a real headless Chromium against a real admin service and Redis.

Chromium and its WebDriver are Debian's ``chromium`` and ``chromium-driver`` packages,
which scripts/bootstrap.sh installs when missing (as it does redis-server).  Without
them these tests are skipped on a developer's machine but fail under CI (``CI`` set),
so CI can never pass by skipping them.  A failing test leaves a screenshot and the
page's HTML in ``test-artifacts/browser/`` (or ``$TEST_ARTIFACTS_DIR/browser``); :func:`shot` saves
a screenshot of each page a test visits in ``test-artifacts/browser/pages/`` (gitignored, for review).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from models import Event, EventPlan, EventType, Reason
from router.admin.auth import Role, TokenStore
from router.dev.servers import free_port, wait_for_port
from router.settings import Settings
from router.storage import keys
from router.storage.live_config import load_rules_file, load_scoring_file
from router.storage.store import RedisStore
from router.worker.distribution import Pick, assign_rep

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Routing picks the rep as of a weekday morning in Chicago, whatever the wall clock says.
PICK_AT = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or REPO / "test-artifacts") / "browser"


def _browser_or_skip() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    msg = (f"{', '.join(missing)} missing: run scripts/bootstrap.sh (it installs Debian's chromium and "
           "chromium-driver)")
    if os.environ.get("CI"):
        pytest.fail(msg + "; browser tests never skip in CI")
    pytest.skip(msg)


@dataclass
class Seeded:
    lead_a: str
    rep_a: str
    lead_b: str
    rep_b: str
    tokens: dict[str, str]


@dataclass
class Console:
    url: str
    seeded: Seeded
    redis_url: str

    def stage(self, lead_id: str) -> str:
        async def read() -> str:
            client = Redis.from_url(self.redis_url)
            try:
                return (await RedisStore(client).lead_hash(lead_id)).get("stage", "")
            finally:
                await client.aclose()

        return asyncio.run(read())


async def _route(store: RedisStore, settings: Settings, email: str, first_name: str, company: str,
                 event_id: str) -> tuple[str, str]:
    """A demo-request form fill that makes the lead sales-ready, routed as the pipeline does."""
    scoring = load_scoring_file(settings.files.scoring_file)
    config = load_rules_file(settings.files.rules_file)
    lead_id = keys.lead_id_for_email(email)
    ts = datetime.now(UTC).timestamp() - 60
    ev = Event(event_id=event_id, type=EventType.FORM_FILL, ts=ts, source="form", email=email,
               form_id="demo-request", fields={"company": company, "country": "US", "first_name": first_name})
    reasons = (Reason(rule="demo-request", points=60.0, event_id=event_id, event_type="form_fill", ts=ts,
                      detail="filled form demo-request", hand_raiser=True),
               Reason(rule="pricing-page", points=15.0, event_id=event_id, event_type="form_fill", ts=ts,
                      detail="looked at pricing"))
    [res] = await store.apply([EventPlan(event=ev, lead_id=lead_id, reasons=reasons, points=75.0,
                                         hand_raiser=True, fields=dict(ev.fields))],
                              threshold=scoring.threshold, half_life_s=scoring.half_life_s, now=ts)
    assert res.status == "fired"
    aid = f"{lead_id}:{res.crossing}"
    pick = await assign_rep(store, config.team("central"), aid, lead_id, res.crossing, PICK_AT)
    assert isinstance(pick, Pick), f"the seeded team held the lead instead of routing it: {pick}"
    await store.commit_assignment(lead_id, res.crossing, aid, pick.rep.rep_id, pick.rep.name, "central",
                                  "default", config.version, ts)
    return lead_id, pick.rep.rep_id


async def _seed(redis_url: str) -> Seeded:
    client = Redis.from_url(redis_url)
    try:
        await client.flushdb()
        store, settings = RedisStore(client), Settings.of(redis_url=redis_url)
        lead_a, rep_a = await _route(store, settings, "jane@acme.com", "Jane", "Acme Corp", "e1")
        lead_b, rep_b = await _route(store, settings, "sam@beta.io", "Sam", "Beta Labs", "e2")
        assert rep_a != rep_b
        tokens = TokenStore(client)
        now = datetime.now(UTC).timestamp()
        made = {"ops": (await tokens.create(Role.OPS, name="olive", now=now))[0],
                "rep_a": (await tokens.create(Role.REP, name="rep a", rep_id=rep_a, now=now))[0],
                "rep_b": (await tokens.create(Role.REP, name="rep b", rep_id=rep_b, now=now))[0]}
        return Seeded(lead_a, rep_a, lead_b, rep_b, made)
    finally:
        await client.aclose()


@contextlib.contextmanager
def running_admin(redis_url: str, tmp_path: Path, **env_extra: str) -> Iterator[Console]:
    """`leadrouter admin` as a real process over the test Redis (seeded: two routed leads, three tokens)."""
    _browser_or_skip()
    seeded = asyncio.run(_seed(redis_url))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADROUTER_") and k not in ("REDIS_URL",)}
    env.update(REDIS_URL=redis_url, PYTHONUNBUFFERED="1", LEADROUTER_TOKEN_SECRET="browser-tests-secret-0123456789",
               **env_extra)
    log = (tmp_path / "admin.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "router.cli.main", "admin", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path, env=env)
    try:
        wait_for_port(port, 30.0, proc)
        yield Console(f"http://127.0.0.1:{port}", seeded, redis_url)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def console(redis_url: str, tmp_path: Path) -> Iterator[Console]:
    """`leadrouter admin` as a real process over the test Redis, with two routed leads and three tokens."""
    with running_admin(redis_url, tmp_path) as c:
        yield c


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile directory) driven through chromedriver."""
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def shot(driver: Any, name: str, *, phone: bool = False) -> Path:
    """Save what the browser shows now as ``test-artifacts/browser/pages/<name>.png`` (whole page height);
    with ``phone`` also ``<name>-phone.png`` at a phone's width."""
    folder = ARTIFACTS / "pages"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    for width, file in [(1280, path), *([(390, folder / f"{name}-phone.png")] if phone else [])]:
        driver.set_window_size(width, 900)
        height = int(driver.execute_script("return document.documentElement.scrollHeight") or 900)
        driver.set_window_size(width, max(900, min(height + 40, 4000)))
        driver.save_screenshot(str(file))
    driver.set_window_size(1280, 900)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failed browser test, save what the browser showed (before the fixture closes it)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    driver = getattr(item, "funcargs", {}).get("browser")
    if driver is None:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = ARTIFACTS / item.name.replace("/", "_")
    try:
        driver.save_screenshot(str(stem.with_suffix(".png")))
        stem.with_suffix(".html").write_text(driver.page_source, encoding="utf-8")
        report.sections.append(("browser", f"screenshot: {stem.with_suffix('.png')} (url {driver.current_url})"))
    except Exception as exc:  # the browser itself may be what failed
        report.sections.append(("browser", f"no screenshot: {exc!r}"))
