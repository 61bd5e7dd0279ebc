"""Alert links: a signed link lets its rep accept or reject that lead, and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from router.settings import Settings
from router.tokens import mint_action_token
from tests.integration.test_admin_api import NOW, Api, make_api, route_lead

pytestmark = pytest.mark.integration

SECRET = "links-secret-0123456789abcdef"


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url, token_secret=SECRET))
    yield a
    await client.close()


def link(lead_id: str, rep_id: str, secret: str = SECRET, ttl_s: int = 3600) -> str:
    return "/a/" + mint_action_token(secret, lead_id=lead_id, rep_id=rep_id, assignment_id=f"{lead_id}:1",
                                     ttl_s=ttl_s, now=NOW.timestamp())


async def test_the_link_shows_the_lead_and_accepts_only_on_post(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "jane@acme.com")
    page = link(lead_id, rep_id)
    status, html = await api.call("GET", page + "?do=accept", who=None)
    assert status == 200 and "Jane" in html and "Acme Corp" in html and 'name="action" value="accept"' in html
    assert (await api.store.lead_hash(lead_id))["stage"] == "mql"  # a GET (or a link preview) changes nothing
    status, html = await api.call("POST", page, who=None, data={"action": "accept"})
    assert status == 200 and "accepted" in html and "Stage now sal." in html
    assert (await api.store.lead_hash(lead_id))["stage"] == "sal"


async def test_reject_needs_a_configured_reason_and_recycles(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "sam@beta.io")
    reasons = api.config.lifecycle.reject_reasons
    status, _ = await api.call("POST", link(lead_id, rep_id), who=None,
                                  data={"action": "reject", "reason": "not a reason"})
    assert status == 422
    status, html = await api.call("POST", link(lead_id, rep_id), who=None,
                                  data={"action": "reject", "reason": reasons[0]})
    assert status == 200 and "rejected" in html and "Stage now nurture." in html
    assert (await api.store.lead_hash(lead_id))["stage"] == "nurture"


async def test_forged_expired_and_other_reps_links_do_nothing(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "kim@gamma.io")
    forged = link(lead_id, rep_id, secret="another-secret-0123456789")
    assert (await api.call("POST", forged, who=None, data={"action": "accept"}))[0] == 400
    api.clock.now = NOW.timestamp() + 7200
    expired = link(lead_id, rep_id, ttl_s=3600)
    assert (await api.call("POST", expired, who=None, data={"action": "accept"}))[0] == 400
    api.clock.now = NOW.timestamp()
    other = next(r.rep_id for r in api.config.reps if r.rep_id != rep_id)
    status, _ = await api.call("POST", link(lead_id, other), who=None, data={"action": "accept"})
    assert status == 409  # only the owner may act
    assert (await api.store.lead_hash(lead_id))["stage"] == "mql"
