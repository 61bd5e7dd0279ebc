"""The compact per-lead records: each reads back as what the old JSON objects held."""

from __future__ import annotations

import orjson
import pytest

from models import Reason
from router.storage.records import (
    EVENT_TYPES,
    decode_field_change,
    decode_reasons,
    decode_summary,
    encode_reason,
    encode_summary,
    field_change_head,
    reason_parts,
    seen_member,
    type_name,
)

EID = "0123456789abcdef0123456789abcdef"


def written(reasons: list[Reason], notes: dict[int, str] | None = None) -> list[bytes]:
    """What apply_event.lua pushes for one event's reasons (uncapped unless ``notes``), newest first."""
    out = []
    for i, (r, (head, tail)) in enumerate(zip(reasons, reason_parts(reasons), strict=True)):
        flag = ",1" if r.hand_raiser else ""
        if notes and i in notes:
            flag = f",{int(r.hand_raiser)},{notes[i]}"
        out.append(f"{head}{r.points:g}{tail}{flag}]".encode())
    return out[::-1]


def test_one_events_reasons_share_its_id_type_and_time() -> None:
    page = Reason(rule="page", points=1.0, event_id=EID, event_type="page_view", ts=1.5, detail="viewed /x")
    pricing = Reason(rule="pricing", points=10.0, event_id=EID, event_type="page_view", ts=1.5,
                     detail="viewed /pricing")
    raws = written([page, pricing])
    assert raws[1] == b'["page",1,"viewed /x"]'  # refers to the whole entry on its left
    assert decode_reasons(raws) == [pricing, page]
    same = Reason(rule="page", points=1.0, event_id=EID, event_type="page_view", ts=1.5, detail="viewed /pricing")
    raws = written([same, pricing])
    assert raws[1] == b'["page",1,null]'
    assert decode_reasons(raws) == [pricing, same]


def test_cap_notes_and_hand_raisers_read_as_the_old_texts() -> None:
    demo = Reason(rule="demo", points=0.0, event_id=EID, event_type="form_fill", ts=2.0, detail="filled form demo",
                  hand_raiser=True)
    form = Reason(rule="form", points=0.0, event_id=EID, event_type="form_fill", ts=2.0, detail="filled form demo")
    got = decode_reasons(written([form, demo], {0: "0", 1: '"0 of 5"'}))
    assert got == [Reason(rule="demo", points=0.0, event_id=EID, event_type="form_fill", ts=2.0,
                          detail="filled form demo (capped: 0 of 5)", hand_raiser=True),
                   Reason(rule="form", points=0.0, event_id=EID, event_type="form_fill", ts=2.0,
                          detail="filled form demo (once per lead: already counted)")]


def test_old_objects_and_compact_entries_mix_in_one_list() -> None:
    old = Reason(rule="open", points=2.0, event_id="legacy-1", event_type="email_open", ts=0.5, detail="opened")
    new = Reason(rule="x", points=0.25, event_id="not-hex", event_type="some_future_type", ts=3.0, detail="d")
    raws = [encode_reason(new).encode(), orjson.dumps(old.to_dict())]
    assert decode_reasons(raws) == [new, old]


@pytest.mark.parametrize("summary", [
    {"type": "page_view", "ts": 1.25, "event_id": EID, "url": "https://a.example/x?y=1", "title": "X"},
    {"type": "email_open", "ts": 2.0, "event_id": "m-1", "campaign": "c"},
    {"type": "form_fill", "ts": 3.0, "event_id": EID, "form_id": "demo"},
    {"type": "track", "ts": 4.0, "event_id": EID},
])
def test_activity_entries_round_trip(summary: dict[str, object]) -> None:
    raw = encode_summary(summary)
    assert raw.startswith("[") and decode_summary(raw) == summary
    assert decode_summary(orjson.dumps(summary)) == summary  # the old object, as it was


def test_field_changes_read_as_the_old_objects() -> None:
    head = field_change_head("company", "Acme / Co", "form demo (unverified)", 5.5, EID)
    new = orjson.loads(head + "2]")  # applied, unverified, no old value
    assert decode_field_change(orjson.dumps(new)) == {
        "field": "company", "new": "Acme / Co", "source": "form demo (unverified)", "verified": False,
        "applied": True, "ts": 5.5, "event_id": EID}
    assert decode_field_change(head + '1,"Acme"]') == {
        "field": "company", "new": "Acme / Co", "source": "form demo (unverified)", "verified": True,
        "applied": False, "ts": 5.5, "event_id": EID, "old": "Acme"}
    old = {"field": "x", "new": "y", "source": "s", "verified": True, "applied": True, "ts": 1, "event_id": "e"}
    assert decode_field_change(orjson.dumps(old)) == old


def test_seen_members_are_one_to_one() -> None:
    assert seen_member(EID) == b"\xff" + bytes.fromhex(EID)
    ids = [EID, EID.upper(), "=" + EID[:16], EID[:16], bytes.fromhex(EID).decode("latin-1"), "m-1", "\u00ff" * 8]
    members = [seen_member(i) for i in ids]
    assert len(set(members)) == len(ids)
    assert all(b"\xff" not in m for i, m in zip(ids, members, strict=True) if i != EID)


def test_type_codes_are_stable() -> None:
    # An index, once stored, names the same type for good: the tuple only ever grows at its end.
    assert EVENT_TYPES[:5] == ("page_view", "page_ping", "email_open", "email_click", "form_fill")
    assert type_name(4) == "form_fill" and type_name("custom") == "custom"
