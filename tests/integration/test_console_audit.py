"""The audit trail over a real Redis: every kind of change through the console, the admin API and the CLI is
recorded with who, when and what; the Audit page is for ops; a lead's page shows its own entries."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from models import Event, EventPlan, EventType, Reason
from router.admin.auth import Role
from router.cli import admin as cmd_admin
from router.cli import main as cli
from router.settings import Settings
from router.storage import audit, keys
from router.storage.live_config import load_scoring_file
from router.storage.redis import sync_redis_from_url
from router.worker import review
from tests.integration.test_admin_api import NOW, Api, make_api, route_lead, two_leads
from tests.integration.test_console import csrf_of, get, post, sign_in
from tests.support import sync_flush

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url))
    yield a
    await client.close()


async def console_act(api: Api, who: str, lead_id: str, action: str, **form: str) -> str:
    csrf = await sign_in(api, who)
    status, _, headers = await post(api, f"/console/leads/{lead_id}/{action}", {"csrf": csrf, **form})
    assert status == 303, (action, status)
    return str(headers["Location"])


async def fired(api: Api, email: str, event_id: str) -> str:
    """A lead whose crossing fired and is not routed yet (what the review queue holds)."""
    scoring = load_scoring_file(api.settings.files.scoring_file)
    lead_id = keys.lead_id_for_email(email)
    ts = NOW.timestamp()
    ev = Event(event_id=event_id, type=EventType.FORM_FILL, ts=ts, source="form", email=email,
               form_id="demo-request", fields={"first_name": "Held"})
    reason = Reason(rule="demo-request", points=60.0, event_id=event_id, event_type="form_fill", ts=ts,
                    hand_raiser=True)
    [res] = await api.store.apply([EventPlan(event=ev, lead_id=lead_id, reasons=(reason,), points=60.0,
                                             hand_raiser=True, fields=dict(ev.fields))],
                                  threshold=scoring.threshold, half_life_s=scoring.half_life_s, now=ts)
    assert res.status == "fired"
    assert await review.hold(api.store, lead_id, res.crossing, {"trust": 0.1}, ts) == "held"
    return lead_id


async def test_every_lead_action_through_the_console_and_the_api_is_audited(api: Api) -> None:
    lead_a, _, lead_b, rep_b = await two_leads(api)
    lead_c, rep_c = await route_lead(api, "cat@gamma.co", event_id="e3")
    await api.token("rep_c", Role.REP, rep_c)
    lead_d, _ = await route_lead(api, "dan@delta.co", event_id="e4")
    # Console: accept, convert, won (rep a); reject with a reason (rep b); reassign (ops).
    await console_act(api, "rep_a", lead_a, "accept")
    await console_act(api, "rep_a", lead_a, "convert", to="opportunity")
    await console_act(api, "rep_a", lead_a, "won", reason="signed")
    await console_act(api, "rep_b", lead_b, "reject", reason="not-a-fit")
    other = next(r.rep_id for r in api.config.team("central").reps if r.rep_id not in (rep_c,))
    await console_act(api, "ops", lead_c, "reassign", to=other, reason="rep c is swamped")
    # API: accept, convert, lost (as ops acting for the owner).
    for action, body in (("accept", {}), ("convert", {"to": "sql"}), ("lost", {"reason": "went quiet"})):
        status, out = await api.call("POST", f"/v1/leads/{lead_d}/{action}", json=body)
        assert status == 200, out
    entries = list(reversed(await audit.recent(api.redis, 50)))
    got = [(e.action, e.who, e.via, e.lead_id) for e in entries]
    assert got == [
        ("lead.accept", "rep_a", "console", lead_a), ("lead.convert", "rep_a", "console", lead_a),
        ("lead.won", "rep_a", "console", lead_a), ("lead.reject", "rep_b", "console", lead_b),
        ("lead.reassign", "ops", "console", lead_c),
        ("lead.accept", "ops", "api", lead_d), ("lead.convert", "ops", "api", lead_d),
        ("lead.lost", "ops", "api", lead_d),
    ]
    assert all(e.ts == api.clock.now for e in entries)
    reject = entries[3]
    assert (reject.role, reject.target, reject.detail) == ("rep", rep_b, "mql -> nurture: not-a-fit")
    assert entries[4].target == other and "rep c is swamped" in entries[4].detail
    assert entries[4].detail.startswith(f"{rep_c} -> {other}")
    # The lead's own entries, newest first, and on its page (ops).
    assert [e.action for e in await audit.for_lead(api.redis, lead_a)] == ["lead.won", "lead.convert",
                                                                           "lead.accept"]
    await sign_in(api, "ops")
    status, html, _ = await get(api, f"/console/leads/{lead_a}")
    assert status == 200 and 'id="lead-audit"' in html and "lead.won" in html and "lead.reject" not in html
    # A refused action records nothing.
    before = len(await audit.recent(api.redis, 50))
    status, _ = await api.call("POST", f"/v1/leads/{lead_a}/accept", json={})
    assert status == 409 and len(await audit.recent(api.redis, 50)) == before


async def test_roster_review_and_rules_changes_are_audited(api: Api) -> None:
    rep = api.config.team("central").reps[0].rep_id
    status, body = await api.call("PATCH", f"/v1/reps/{rep}/availability",
                                  json={"out_of_office": True, "until": "2026-12-31", "note": "holiday"})
    assert status == 200, body
    status, body = await api.call("PATCH", f"/v1/reps/{rep}/availability", json={"out_of_office": False})
    assert status == 200, body
    held, spam = await fired(api, "hal@held.co", "h1"), await fired(api, "sam@spam.co", "h2")
    assert (await api.call("POST", f"/v1/review/{held}/release"))[0] == 200
    assert (await api.call("POST", f"/v1/review/{spam}/dismiss"))[0] == 200
    status, body = await api.call("POST", "/v1/rules/publish", json={"note": "from the file"})
    assert status == 201, body
    status, body = await api.call("POST", "/v1/rules/publish", json={"note": "again"})
    assert status == 201, body
    status, body = await api.call("POST", "/v1/rules/rollback/1", json={"note": "back"})
    assert status == 200, body
    got = [(e.action, e.who, e.via, e.lead_id, e.target, e.detail)
           for e in reversed(await audit.recent(api.redis, 50))]
    assert got == [
        ("rep.availability", "ops", "api", "", rep, "out of office until 2026-12-31: holiday"),
        ("rep.availability", "ops", "api", "", rep, "back"),
        ("review.release", "ops", "api", held, "", ""),
        ("review.dismiss", "ops", "api", spam, "", ""),
        ("rules.publish", "ops", "api", "", "v1", "from the file"),
        ("rules.publish", "ops", "api", "", "v2", "again"),
        ("rules.rollback", "ops", "api", "", "v1", "back"),
    ]


async def test_the_audit_page_is_for_ops_and_pages_back(api: Api) -> None:
    await two_leads(api)
    for n in range(105):
        await audit.record(api.redis, who=f"w{n}", role="ops", action="rules.publish" if n % 2 else "lead.accept",
                           via="api", detail=f"<b>n{n}</b>", now=1000.0 + n)
    for who in ("rep_a", "viewer"):
        await sign_in(api, who)
        status, html, _ = await get(api, "/console/audit")
        assert status == 403 and "may not do this" in html
    await sign_in(api, "ops")
    status, html, _ = await get(api, "/console/audit")
    assert status == 200 and html.count("<tr data-action") == 100
    assert "w104" in html and "&lt;b&gt;n104&lt;/b&gt;" in html and "<b>n104" not in html
    assert 'href="/console/audit"' in html  # in the nav
    older = html.split('id="older" href="')[1].split('"')[0].replace("&amp;", "&")
    status, html, _ = await get(api, older)
    assert status == 200 and html.count("<tr data-action") == 5 and ">w4 (ops)<" in html and ">w5 (ops)<" not in html
    status, html, _ = await get(api, "/console/audit?action=lead.")
    assert html.count('data-action="lead.accept"') == 53 and "rules.publish</td>" not in html
    csrf_of(html)


def test_token_changes_and_scoring_publishes_through_the_cli_are_audited(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.of(redis_url=redis_url)
    client = sync_redis_from_url(redis_url)
    sync_flush(client)
    parser = argparse.ArgumentParser(prog="leadrouter")
    cmd_admin.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> None:
        args = parser.parse_args(list(argv))
        assert int(args.fn(settings, args)) == 0

    monkeypatch.setattr("getpass.getuser", lambda: "olive")
    run("admin", "token", "create", "--role", "ops", "--name", "ana")
    made = capsys.readouterr().out.strip()
    prefix = made and client.smembers(keys.ADMIN_TOKENS).pop().decode()[:12]
    run("admin", "token", "rotate", prefix, "--overlap-minutes", "0")
    new = next(h.decode() for h in client.smembers(keys.ADMIN_TOKENS))[:12]
    run("admin", "token", "revoke", new)
    # A scoring publish through the CLI.
    for name in ("scoring.yaml", "scoring_test.yaml"):
        (tmp_path / name).write_text((REPO / "scoring" / name).read_text())
    for var in [v for v in __import__("os").environ if v.startswith("LEADROUTER_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LEADROUTER_SCORING_FILE", str(tmp_path / "scoring.yaml"))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("router.cli.scoring",))
    assert cli.main(["scoring", "publish", "--author", "sofia", "--note", "new weights"]) == 0
    rows = client.xrange(keys.AUDIT)
    got = [(f[b"action"].decode(), f[b"who"].decode(), f[b"via"].decode(), f[b"target"].decode()) for _, f in rows]
    assert got == [("token.create", "cli:olive", "cli", prefix), ("token.rotate", "cli:olive", "cli", prefix),
                   ("token.revoke", "cli:olive", "cli", new), ("scoring.publish", "sofia", "cli", "v1")]
    assert b"token named 'ana'" in rows[0][1][b"detail"] and made.encode() not in b"".join(
        v for _, f in rows for v in f.values())  # the token itself is never recorded


async def test_the_ops_pages_changes_are_audited_as_made_through_the_console(api: Api) -> None:
    rep = api.config.team("central").reps[0].rep_id
    for note in ("first", "second"):
        assert (await api.call("POST", "/v1/rules/publish", json={"note": note}))[0] == 201
    csrf = await sign_in(api, "ops")
    status, _, _ = await post(api, f"/console/team/{rep}/availability",
                              {"csrf": csrf, "out_of_office": "1", "until": "2026-12-31", "note": "holiday"})
    assert status == 303
    status, _, _ = await post(api, "/console/rules/routing/rollback", {"csrf": csrf, "version": "v1", "note": "undo"})
    assert status == 303
    got = [(e.action, e.who, e.via, e.target, e.detail) for e in reversed(await audit.recent(api.redis, 10))]
    assert got[2:] == [("rep.availability", "ops", "console", rep, "out of office until 2026-12-31: holiday"),
                       ("rules.rollback", "ops", "console", "v1", "undo")]
