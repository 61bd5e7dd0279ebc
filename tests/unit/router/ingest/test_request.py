"""Request helpers that shortcut aiohttp on the pixel's hot path give aiohttp's answers."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from router.ingest.request import _valid_ip, client_ip, cookie_value, new_event_id, new_visitor_id
from router.settings import parse_networks

HEADERS = [
    "",
    "lr_vid=abcdefgh1",
    "a=1; lr_vid=abcdefgh1; b=2",
    "a=1;lr_vid = abcdefgh1 ;b=2",
    "lr_vid=aaaaaaaa1; lr_vid=bbbbbbbb2",  # duplicates: the last wins, as in aiohttp
    "LR_VID=abcdefghij",  # names are case-sensitive
    "xlr_vid=abcdefghij; lr_vidx=zzzzzzzzz",
    " lr_vid=abcdefgh=x",
    "lr_vid",
    "lr_vid=",
    'lr_vid="abcdefgh"',  # quoted: aiohttp's parser
    'x="a; lr_vid=zzzzzzzzz"',
    'lr_vid="abc\\"def"',
    "lr_vid=abc;;;;lr_vid=;",
    "lr_vid=abcdefgh1; lr_vid",
    "a=1; lr_vid; b",
]


@pytest.mark.parametrize("header", HEADERS)
def test_cookie_value_agrees_with_aiohttp(header: str) -> None:
    request = make_mocked_request("GET", "/t/p.gif", headers=CIMultiDict({"Cookie": header} if header else {}))
    assert cookie_value(request, "lr_vid") == request.cookies.get("lr_vid")


def test_client_ip_caches_do_not_change_answers() -> None:
    trusted = parse_networks("127.0.0.1/32,10.0.0.0/8")

    def ask(peer: str, xff: str) -> str | None:
        request = make_mocked_request("GET", "/", headers=CIMultiDict({"X-Forwarded-For": xff}))
        request._transport_peername = (peer, 1234)
        return client_ip(request, trusted)

    for _ in range(2):  # the second round is answered from the caches
        assert ask("127.0.0.1", "203.0.113.9, 10.1.2.3") == "203.0.113.9"
        assert ask("198.51.100.4", "203.0.113.9") == "198.51.100.4"  # an untrusted peer's header is ignored
        assert ask("127.0.0.1", "junk, 10.1.2.3") == "127.0.0.1"
        assert ask("::ffff:127.0.0.1", "2001:db8::1") == "2001:db8::1"
    assert _valid_ip.cache_info().hits > 0


def test_ids_are_32_random_hex_characters() -> None:
    ids = {new_event_id() for _ in range(1000)} | {new_visitor_id() for _ in range(1000)}
    assert len(ids) == 2000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
