"""leadrouter forget: a person is erased from Redis and from further processing."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.settings import DEV_PII_KEY
from router.storage import keys
from router.storage.pii import Vault
from router.storage.store import RedisStore
from router.worker.accounts import AccountRef
from router.worker.batch import apply_batch
from router.worker.privacy import forget
from rules import load_routing
from scoring import load_scoring_config
from tests.support import T0

pytestmark = pytest.mark.integration

CONFIG = load_scoring_config(
    """
threshold: 1000
rules:
  - {name: page, description: any page, event: page_view, points: 1}
  - {name: form, description: any form, event: form_fill, points: 10}
""",
    "forget.yaml",
)
ROUTING = load_routing(
    """
version: "t1"
teams:
  east:
    description: east
    manager: Mia
    reps: [{id: rep-a, name: Rep A, email: rep.a@example.com}]
rules:
  - {name: all, description: everyone, when: always, team: east}
""",
    "routing.yaml",
)


async def test_forget_erases_the_person_and_later_events_are_dropped(redis: Redis) -> None:
    store = RedisStore(redis)
    email = "erase.me@globex.io"
    events = [
        Event(event_id="p1", type=EventType.PAGE_VIEW, ts=T0, source="pixel", visitor_id="vid-forget-001",
              url="https://x.io/pricing"),
        Event(event_id="f1", type=EventType.FORM_FILL, ts=T0, source="form", visitor_id="vid-forget-001",
              email=email, user_id="u-77", form_id="newsletter", fields={"first_name": "Erin", "company": "Globex"}),
        Event(event_id="f2", type=EventType.FORM_FILL, ts=T0, source="form", email="stays@globex.io",
              form_id="newsletter"),
    ]
    await apply_batch(store, CONFIG, events, T0)
    lead_id = keys.lead_id_for_email(email)
    kid = AccountRef("d:globex.io", "", "", "").key_id
    assert await redis.zscore(keys.account_keys(kid)[2], lead_id) is not None

    vault = Vault(redis, DEV_PII_KEY)
    report = await forget(store, ROUTING, email, now=T0 + 10, vault=vault)
    assert report.existed and report.account == kid and sorted(report.identifiers) == ["u", "v"]
    # A short-lived marker (no personal data) stops batches in flight; the lasting tombstone is keyed.
    assert await store.lead_hash(lead_id) == {"forgotten": "1"}
    assert 0 < await redis.ttl(keys.lead(lead_id)) <= keys.FORGET_GRACE_S
    assert await redis.exists(keys.pii_gone(vault.subject(email)))
    gone = [*keys.lead_keys(lead_id)[1:], keys.visitor("vid-forget-001"), keys.user("u-77"),
            keys.lead_account(lead_id), keys.lead_ids(lead_id), *keys.lead_keys(keys.lead_id_for_visitor("vid-forget-001"))]
    for key in gone:
        assert not await redis.exists(key), key
    assert await redis.zscore(keys.account_keys(kid)[2], lead_id) is None
    # The colleague at the same company is untouched.
    assert float((await store.lead_hash(keys.lead_id_for_email("stays@globex.io")))["score"]) == 10
    # Further events for that person are dropped, not stored again.
    again = [Event(event_id="f3", type=EventType.FORM_FILL, ts=T0 + 20, source="form", email=email,
                   form_id="demo-request", fields={"first_name": "Erin"})]
    out = await apply_batch(store, CONFIG, again, T0 + 20)
    assert out.results[0].status == "forgotten"
    assert await store.lead_hash(lead_id) == {"forgotten": "1"}
    # After the marker expires, the worker still drops them: the tombstone is checked before anything is stored.
    await redis.delete(keys.lead(lead_id))
    kept, dropped = await vault.open(again)
    assert kept == [] and [e.event_id for e in dropped] == ["f3"]
