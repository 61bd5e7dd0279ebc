"""The ops console over a real Redis: sign-in, sessions, CSRF, security headers, roles, leads and their actions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from router.admin.auth import Role, TokenStore
from router.admin.console.session import COOKIE, PRE_COOKIE, session_hash
from router.settings import Settings
from router.storage import keys
from tests.integration.test_admin_api import Api, make_api, route_lead, two_leads

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url))
    yield a
    await client.close()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "the page has no CSRF field"
    return m.group(1)


async def get(api: Api, path: str) -> tuple[int, str, Any]:
    async with api.client.get(path, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers


async def post(api: Api, path: str, data: dict[str, str], **kw: Any) -> tuple[int, str, Any]:
    async with api.client.post(path, data=data, allow_redirects=False, **kw) as resp:
        return resp.status, await resp.text(), resp.headers


async def sign_in(api: Api, who: str) -> str:
    """Sign in as a token holder; returns the session's CSRF token."""
    api.client.session.cookie_jar.clear()
    status, html, _ = await get(api, "/console/sign-in")
    assert status == 200
    status, _, headers = await post(api, "/console/sign-in", {"csrf": csrf_of(html), "token": api.tokens[who]})
    assert status == 303 and headers["Location"] == "/console/"
    cookie = headers.getall("Set-Cookie")
    (session_cookie,) = [c for c in cookie if c.startswith(COOKIE + "=")]
    assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie and "Path=/console" in session_cookie
    status, html, _ = await get(api, "/console/leads")
    assert status == 200
    return csrf_of(html)


async def test_sign_in_needs_the_form_cookie_and_a_known_token(api: Api) -> None:
    status, _, headers = await get(api, "/console/leads")
    assert status == 303 and headers["Location"] == "/console/sign-in"
    status, html, headers = await get(api, "/console/sign-in")
    assert status == 200 and any(c.startswith(PRE_COOKIE + "=") for c in headers.getall("Set-Cookie"))
    pre = csrf_of(html)
    # A cross-site form post has no double-submit cookie (or a different one): refused, nothing made.
    api.client.session.cookie_jar.clear()
    status, _, _ = await post(api, "/console/sign-in", {"csrf": pre, "token": api.tokens["ops"]})
    assert status == 403
    status, html, _ = await get(api, "/console/sign-in")
    pre = csrf_of(html)
    status, _, _ = await post(api, "/console/sign-in", {"csrf": pre, "token": api.tokens["ops"]},
                              headers={"Origin": "https://evil.example"})
    assert status == 403
    status, html, _ = await get(api, "/console/sign-in")  # a refusal hands out a fresh form cookie
    pre = csrf_of(html)
    for bad in ("lra_" + "x" * 40, "nonsense", ""):
        status, html, _ = await post(api, "/console/sign-in", {"csrf": pre, "token": bad})
        assert status == 401 and "not known" in html
    assert not [k async for k in api.redis.scan_iter(match=keys.console_session("*"))]
    await sign_in(api, "ops")
    assert len([k async for k in api.redis.scan_iter(match=keys.console_session("*"))]) == 1


async def test_pages_carry_security_headers_and_escape_what_leads_say(api: Api) -> None:
    lead_id, _ = await route_lead(api, "jane@acme.com")
    await api.redis.hset(keys.lead(lead_id), "f:first_name", '<script>alert("x")</script>')
    await sign_in(api, "ops")
    status, html, headers = await get(api, f"/console/leads/{lead_id}")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "script-src" not in csp
    assert "'unsafe-inline'" not in csp
    assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"
    assert "<script" not in html and "&lt;script&gt;" in html


async def test_ops_find_a_lead_see_score_reasons_and_accept_it(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "jane@acme.com")
    csrf = await sign_in(api, "ops")
    status, html, _ = await get(api, "/console/leads?q=JANE@acme.com")
    assert status == 200 and f"/console/leads/{lead_id}" in html and "Acme Corp" in html
    status, html, _ = await get(api, f"/console/leads/{lead_id}")
    assert status == 200
    assert 'data-fact="Score now">75.0<' in html and 'data-fact="Stage">mql<' in html
    assert "demo-request" in html and "pricing-page" in html and 'id="accept"' in html
    # A post without the session's CSRF token changes nothing.
    status, _, _ = await post(api, f"/console/leads/{lead_id}/accept", {"csrf": "forged"})
    assert status == 403 and (await api.store.lead_hash(lead_id))["stage"] == "mql"
    status, _, headers = await post(api, f"/console/leads/{lead_id}/accept", {"csrf": csrf})
    assert status == 303 and headers["Location"] == f"/console/leads/{lead_id}?done=accept"
    assert (await api.store.lead_hash(lead_id))["stage"] == "sal"
    status, html, _ = await get(api, headers["Location"])
    assert "Accepted" in html and 'data-fact="Stage">sal<' in html and "accept" in html.split('id="history"')[1]
    history = await api.store.lead_history(lead_id)
    assert history[-1]["action"] == "accept" and history[-1]["rep"] == rep_id


async def test_reject_needs_a_reason_from_the_policy(api: Api) -> None:
    lead_id, _ = await route_lead(api, "sam@beta.io")
    csrf = await sign_in(api, "ops")
    status, html, _ = await post(api, f"/console/leads/{lead_id}/reject", {"csrf": csrf})
    assert status == 422 and "reason" in html
    status, _, _ = await post(api, f"/console/leads/{lead_id}/reject", {"csrf": csrf, "reason": "not a reason"})
    assert status == 422 and (await api.store.lead_hash(lead_id))["stage"] == "mql"
    reason = api.config.lifecycle.reject_reasons[0]
    status, _, _ = await post(api, f"/console/leads/{lead_id}/reject", {"csrf": csrf, "reason": reason})
    assert status == 303 and (await api.store.lead_hash(lead_id))["stage"] == "nurture"


async def test_a_rep_sees_and_works_only_their_own_leads(api: Api) -> None:
    lead_a, _, lead_b, _ = await two_leads(api)
    csrf = await sign_in(api, "rep_b")
    status, _, headers = await get(api, "/console/")
    assert status == 303 and headers["Location"] == "/console/queue"
    status, html, _ = await get(api, "/console/queue")
    assert status == 200 and f"/console/leads/{lead_b}" in html and lead_a not in html
    status, html, _ = await get(api, f"/console/leads/{lead_a}")
    assert status == 403 and "not assigned to rep" in html and "Jane" not in html
    status, _, _ = await post(api, f"/console/leads/{lead_a}/accept", {"csrf": csrf})
    assert status == 403 and (await api.store.lead_hash(lead_a))["stage"] == "mql"
    status, html, _ = await get(api, "/console/leads?q=jane@acme.com")
    assert status == 200 and lead_a not in html
    status, _, _ = await post(api, f"/console/leads/{lead_b}/accept", {"csrf": csrf})
    assert status == 303 and (await api.store.lead_hash(lead_b))["stage"] == "sal"


async def test_readonly_reads_but_changes_nothing(api: Api) -> None:
    lead_id, _ = await route_lead(api, "jane@acme.com")
    csrf = await sign_in(api, "viewer")
    status, html, _ = await get(api, f"/console/leads/{lead_id}")
    assert status == 200 and "demo-request" in html and 'id="accept"' not in html
    status, _, _ = await post(api, f"/console/leads/{lead_id}/accept", {"csrf": csrf})
    assert status == 403 and (await api.store.lead_hash(lead_id))["stage"] == "mql"
    assert (await get(api, "/console/queue"))[0] == 403


async def test_sign_out_and_revoking_the_token_end_the_session(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    sid = api.client.session.cookie_jar.filter_cookies(api.client.make_url("/console/"))[COOKIE].value
    assert await api.redis.ttl(keys.console_session(session_hash(sid))) > 0
    assert (await post(api, "/console/sign-out", {"csrf": "forged"}))[0] == 403
    status, _, headers = await post(api, "/console/sign-out", {"csrf": csrf})
    assert status == 303 and headers["Location"] == "/console/sign-in"
    assert not await api.redis.exists(keys.console_session(session_hash(sid)))
    assert (await get(api, "/console/leads"))[0] == 303
    # The old cookie, replayed, is dead too.
    api.client.session.cookie_jar.update_cookies({COOKIE: sid})
    assert (await get(api, "/console/leads"))[0] == 303

    token, principal = await TokenStore(api.redis).create(Role.OPS, name="temp", now=api.clock())
    api.tokens["temp"] = token
    await sign_in(api, "temp")
    await TokenStore(api.redis).revoke(principal.token_hash[:12])
    assert (await get(api, "/console/leads"))[0] == 303


async def test_an_expired_admin_token_neither_signs_in_nor_keeps_its_session(api: Api) -> None:
    """Issue 16.8 meets the console: a token's expiry ends its console sessions as it ends its API calls."""
    token, _ = await TokenStore(api.redis).create(Role.OPS, name="short", now=api.clock(), ttl_s=3600)
    api.tokens["short"] = token
    await sign_in(api, "short")
    assert (await get(api, "/console/leads"))[0] == 200
    api.clock.now = api.clock() + 3601  # an hour later the token has expired: the session is gone
    assert (await get(api, "/console/leads"))[0] == 303
    api.client.session.cookie_jar.clear()
    status, html, _ = await get(api, "/console/sign-in")
    status, _, _ = await post(api, "/console/sign-in", {"csrf": csrf_of(html), "token": token})
    assert status != 303, "an expired token must not sign in"


async def test_a_rep_works_a_lead_to_won_and_refusals_are_pages(api: Api) -> None:
    lead_a, rep_a, _, _ = await two_leads(api)
    csrf = await sign_in(api, "rep_a")
    base = f"/console/leads/{lead_a}"
    assert (await post(api, f"{base}/accept", {"csrf": csrf}))[0] == 303
    status, html, _ = await post(api, f"{base}/accept", {"csrf": csrf})
    assert status == 409 and "it is sal" in html and "<h1>Cannot do that</h1>" in html
    assert (await post(api, f"{base}/convert", {"csrf": csrf, "to": "won"}))[0] == 422
    assert (await post(api, f"{base}/convert", {"csrf": csrf, "to": "sql"}))[0] == 303
    assert (await post(api, f"{base}/convert", {"csrf": csrf}))[0] == 303  # the next stage: opportunity
    assert (await api.store.lead_hash(lead_a))["stage"] == "opportunity"
    status, _, headers = await post(api, f"{base}/won", {"csrf": csrf, "reason": "signed"})
    assert status == 303 and headers["Location"].endswith("?done=won")
    assert (await api.store.lead_hash(lead_a))["stage"] == "won"
    history = await api.store.lead_history(lead_a)
    assert [h["action"] for h in history] == ["assigned", "accept", "convert", "convert", "won"]
    assert {h["rep"] for h in history[1:]} == {rep_a}
    # Reassigning is for ops only.
    assert (await post(api, f"{base}/reassign", {"csrf": csrf, "to": "x", "reason": "y"}))[0] == 403


async def test_ops_reassign_an_open_lead_with_a_reason(api: Api) -> None:
    lead_id, owner = await route_lead(api, "jane@acme.com")
    csrf = await sign_in(api, "ops")
    status, html, _ = await get(api, f"/console/leads/{lead_id}")
    assert 'id="reassign"' in html
    base = f"/console/leads/{lead_id}"
    central = api.config.team("central")
    target = next(r.rep_id for r in central.reps if r.rep_id != owner and r.rep_id != "moses-frase")
    status, html, _ = await post(api, f"{base}/reassign", {"csrf": csrf, "to": target})
    assert status == 422 and (await api.store.lead_hash(lead_id))["owner"] == owner
    status, html, _ = await post(api, f"{base}/reassign", {"csrf": csrf, "to": "nobody-at-all", "reason": "x"})
    assert status == 422 and (await api.store.lead_hash(lead_id))["owner"] == owner
    status, _, headers = await post(api, f"{base}/reassign", {"csrf": csrf, "to": target, "reason": "speaks German"})
    assert status == 303 and headers["Location"].endswith("?done=reassign")
    assert (await api.store.lead_hash(lead_id))["owner"] == target
    status, html, _ = await get(api, headers["Location"])
    assert "Reassigned" in html and "speaks German" in html
