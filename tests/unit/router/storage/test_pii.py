"""The pure parts of personal-data protection: keyed hashes, pseudonyms, IP truncation, sealing."""

from __future__ import annotations

import hashlib

import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.storage.pii import SealError, Vault, pseudonym, truncate_ip

MASTER = "unit-pii-master-key-0123456789"


@pytest.fixture
def vault() -> Vault:
    return Vault(Redis(), MASTER)  # no command is sent: only the keyed hashes and sealing are used here


@pytest.mark.parametrize(("ip", "want"), [
    ("203.0.113.77", "203.0.113.0"),
    ("10.1.2.3", "10.1.2.0"),
    ("2001:db8:abcd:12:34::1", "2001:db8:abcd::"),
    ("::ffff:198.51.100.9", "198.51.100.0"),
    ("not-an-ip", None),
    ("", None),
    (None, None),
])
def test_ips_are_truncated(ip: str | None, want: str | None) -> None:
    assert truncate_ip(ip) == want


def test_the_subject_is_keyed_and_normalised(vault: Vault) -> None:
    email = "Jane.Doe@Acme.com "
    subject = vault.subject(email)
    assert subject == vault.subject("jane.doe@acme.com")
    normal = b"jane.doe@acme.com"
    for name in ("sha256", "sha1", "md5", "sha512"):
        assert subject[:16] not in hashlib.new(name, normal).hexdigest()
    assert Vault(Redis(), "another-master-key-0123456789").subject(email) != subject


def test_pseudonyms_are_stable_keyed_and_one_way(vault: Vault) -> None:
    p = vault.pseudonym("vid-0001-abcdef")
    assert p == pseudonym(MASTER, "vid-0001-abcdef") and p.startswith("p1") and len(p) == 34
    assert "vid-0001" not in p and p != vault.pseudonym("vid-0001-abcdeg")
    assert pseudonym("another-master-key-0123456789", "vid-0001-abcdef") != p


def test_sealing_round_trips_and_binds_the_subject() -> None:
    key = bytes(range(32))
    sealed = Vault.seal(key, "subj-a", {"email": "jane@acme.com", "fields": {"phone": "+1 555"}})
    assert "jane" not in sealed and sealed.startswith("s1.")
    assert Vault.unseal(key, "subj-a", sealed) == {"email": "jane@acme.com", "fields": {"phone": "+1 555"}}
    with pytest.raises(SealError, match="does not open"):
        Vault.unseal(key, "subj-b", sealed)  # moved to another person
    with pytest.raises(SealError, match="does not open"):
        Vault.unseal(bytes(32), "subj-a", sealed)  # another key (a shredded one cannot be guessed)
    flipped = sealed[:10] + ("A" if sealed[10] != "A" else "B") + sealed[11:]
    with pytest.raises(SealError, match="does not open"):
        Vault.unseal(key, "subj-a", flipped)


def test_an_identified_event_keeps_only_routing_metadata_in_the_clear(vault: Vault) -> None:
    ev = Event(event_id="e1", type=EventType.FORM_FILL, ts=1.0, source="form", visitor_id="vid-0001-abcdef",
               email="jane@acme.com", url="https://acme.com/?email=jane@acme.com", form_id="demo-request",
               fields={"first_name": "Jane", "phone": "+1 555 0100"}, user_agent="Mozilla/5.0", ip="203.0.113.9")
    subject = vault.subject(ev.email or "")
    sealed = vault.seal_event(vault.pseudonymise(ev), subject, bytes(range(32)))
    data = sealed.to_dict()
    text = str(data)
    for secret in ("jane", "Jane", "555", "Mozilla", "203.0.113", "vid-0001"):
        assert secret not in text
    assert (data["form_id"], data["event_id"], data["type"]) == ("demo-request", "e1", "form_fill")
    assert sealed.partition_key() == f"v:{vault.pseudonym('vid-0001-abcdef')}"
    opened = Vault.unseal(bytes(range(32)), subject, sealed.sealed or "")
    assert opened["email"] == "jane@acme.com" and opened["ip"] == "203.0.113.0"
    assert opened["fields"] == {"first_name": "Jane", "phone": "+1 555 0100"}
