"""A burst of malformed, oversized and abusive requests against a real collector process.

Every request is written on a raw socket (so nothing in a client library
tidies it up) and must be answered with a status line: no connection reset,
no 5xx (503 is by design only for a full spool, which is not the case here).
Afterwards the collector still accepts a valid form, and
``leadrouter_collector_invalid_total`` grew by exactly what the burst should
have counted.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest

from router.ingest.app import MAX_FORM_BYTES
from router.tokens import mint_token
from tests.faults.harness import BROWSER_UA, SECRET, Stack, fetch_metrics, metric_family

pytestmark = pytest.mark.e2e

WRITE_KEY = "WK_FAULTS"
GIF_LEN = 43


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    statuses: frozenset[int]
    invalid: dict[tuple[str, str], int] = field(default_factory=dict)
    gif: bool = False  # the answer must be the 43-byte GIF


def req(method: str, target: str, headers: dict[str, str] | list[tuple[str, str]] | None = None,
        body: bytes = b"", *, content_length: bool = True) -> bytes:
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in items}
    lines = [f"{method} {target} HTTP/1.1", "Host: collector.test", f"User-Agent: {BROWSER_UA}"]
    lines += [f"{k}: {v}" for k, v in items]
    if content_length and body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, size: int = 16 * 1024) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


def s(*codes: int) -> frozenset[int]:
    return frozenset(codes)


def json_form(body: bytes, **headers: str) -> bytes:
    return req("POST", "/t/form", {"Content-Type": "application/json", **headers}, body)


GOOD_FORM = orjson.dumps({"form_id": "contact-us", "email": "burst@mailinator.com", "company": "Burst " * 20})
GZ_FORM = gzip.compress(GOOD_FORM)


def cases() -> list[Case]:
    huge = b"x" * (3 * MAX_FORM_BYTES)
    open_token = mint_token(SECRET, email="burst@mailinator.com", campaign="c", ttl_s=3600)
    forged = mint_token("another-secret-0123456789", email="burst@mailinator.com", campaign="c", ttl_s=3600)
    sp = "/com.snowplowanalytics.snowplow/tp2"
    auth = {"Authorization": "Basic " + __import__("base64").b64encode(f"{WRITE_KEY}:".encode()).decode()}
    out = [
        # ---- form: bad bodies --------------------------------------------------------------
        Case("form bad json", json_form(b'{"form_id": "x", "email": '), s(400), {("form", "body"): 1}),
        Case("form json array", json_form(b'["form_id", "email"]'), s(400), {("form", "body"): 1}),
        Case("form json scalar", json_form(b"42"), s(400), {("form", "body"): 1}),
        Case("form json nul bytes", json_form(b'{"form_id": "\x00\x01"}'), s(400), {("form", "body"): 1}),
        Case("form not utf-8 json", json_form(b'{"form_id": "\xff\xfe"}'), s(400), {("form", "body"): 1}),
        Case("form text/plain", req("POST", "/t/form", {"Content-Type": "text/plain"}, b"form_id=a&email=b"),
             s(400), {("form", "body"): 1}),
        Case("form no content type", req("POST", "/t/form", {}, b"form_id=a"), s(400), {("form", "body"): 1}),
        Case("form empty json object", json_form(b"{}"), s(422), {("form", "form_id"): 1, ("form", "email"): 1}),
        Case("form bad email", json_form(orjson.dumps({"form_id": "contact-us", "email": "not-an-email"})),
             s(422), {("form", "email"): 1}),
        Case("form bad form_id", json_form(orjson.dumps({"form_id": "<script>", "email": "a@b.co"})),
             s(422), {("form", "form_id"): 1}),
        Case("form non-text fields", json_form(orjson.dumps(
            {"form_id": "contact-us", "email": "a@b.co", "company": {"x": 1}, "country": [1]})),
             s(422), {("form", "company"): 1, ("form", "country"): 1}),
        Case("form bad consent", json_form(orjson.dumps(
            {"form_id": "contact-us", "email": "a@b.co", "consent": "maybe"})), s(422), {("form", "consent"): 1}),
        Case("form urlencoded garbage", req("POST", "/t/form", {"Content-Type": "application/x-www-form-urlencoded"},
                                            b"%%%&&&==%ZZ&form_id"), s(422),
             {("form", "form_id"): 1, ("form", "email"): 1}),
        Case("form bad charset", req("POST", "/t/form", {
            "Content-Type": "application/x-www-form-urlencoded; charset=no-such-charset"}, b"form_id=a"),
             s(400), {("form", "body"): 1}),
        Case("form multipart without boundary", req("POST", "/t/form", {"Content-Type": "multipart/form-data"},
                                                    b"--x\r\n\r\n"), s(400, 422)),
        # ---- form: oversized and badly encoded bodies -------------------------------------
        Case("form huge with content-length", json_form(huge), s(413)),
        Case("form huge chunked", req("POST", "/t/form", {"Content-Type": "application/json",
                                                          "Transfer-Encoding": "chunked"}, chunked(huge)), s(413)),
        Case("form gzip bomb", req("POST", "/t/form", {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                                   gzip.compress(b"{" + b" " * (8 * MAX_FORM_BYTES) + b"}")), s(413)),
        Case("form gzip cut in half", req("POST", "/t/form", {
            "Content-Type": "application/json", "Content-Encoding": "gzip"}, GZ_FORM[:len(GZ_FORM) // 2]), s(400),
             {("form", "body"): 1}),
        Case("form content-length lies short", req("POST", "/t/form", {
            "Content-Type": "application/json", "Content-Length": "5"}, GOOD_FORM), s(400), {("form", "body"): 1}),
        # ---- pixel: always the GIF ----------------------------------------------------------
        Case("pixel javascript url", req("GET", "/t/p.gif?url=javascript:alert(1)&vid=abcdefgh1234"), s(200),
             {("pixel", "url"): 1}, gif=True),
        Case("pixel bad vid and referrer", req("GET", "/t/p.gif?vid=%00%01bad&url=https://a.test/&ref=ftp://x"),
             s(200), {("pixel", "vid"): 1, ("pixel", "referrer"): 1}, gif=True),
        Case("pixel bad cookie", req("GET", "/t/p.gif?url=https://a.test/", {"Cookie": "lr_vid=%%%bad%%%"}),
             s(200), {("pixel", "cookie"): 1}, gif=True),
        Case("pixel huge url", req("GET", "/t/p.gif?url=https://a.test/" + "a" * 5000), s(200),
             {("pixel", "url"): 1}, gif=True),
        Case("pixel control chars in url", req("GET", "/t/p.gif?url=https://a.test/%0d%0aSet-Cookie:x=1"), s(200),
             {("pixel", "url"): 1}, gif=True),
        Case("pixel invalid percent and utf-8", req("GET", "/t/p.gif?url=%ff%fe%zz&title=%c3%28"), s(200),
             {("pixel", "url"): 1}, gif=True),
        Case("pixel many params", req("GET", "/t/p.gif?" + "&".join(f"u{i}=x" for i in range(600))), s(200),
             gif=True),
        Case("pixel with a body", req("GET", "/t/p.gif?url=https://a.test/", {}, b"x" * 1000), s(200), gif=True),
        # ---- e-mail tokens --------------------------------------------------------------------
        Case("open garbage token", req("GET", "/t/o/not-a-token.gif"), s(200),
             {("email_open", "token"): 1}, gif=True),
        Case("open forged token", req("GET", f"/t/o/{forged}.gif"), s(200), {("email_open", "token"): 1}, gif=True),
        Case("open truncated token", req("GET", f"/t/o/{open_token[:-5]}.gif"), s(200),
             {("email_open", "token"): 1}, gif=True),
        Case("open token of dots", req("GET", "/t/o/....%2e%2e.gif"), s(200), {("email_open", "token"): 1},
             gif=True),
        Case("open huge token", req("GET", "/t/o/" + "A" * 6000 + ".gif"), s(200),
             {("email_open", "token"): 1}, gif=True),
        Case("click garbage token", req("GET", "/t/c/not-a-token"), s(400), {("email_click", "token"): 1}),
        Case("click open token", req("GET", f"/t/c/{open_token}"), s(400), {("email_click", "token"): 1}),
        Case("click forged", req("GET", f"/t/c/{forged}"), s(400), {("email_click", "token"): 1}),
        # ---- Segment / Snowplow ---------------------------------------------------------------
        Case("segment bad json", req("POST", "/v1/track", {"Content-Type": "application/json", **auth}, b"{nope"),
             s(400), {("segment", "body"): 1}),
        Case("segment bad gzip", req("POST", "/v1/batch", {"Content-Encoding": "gzip", **auth}, b"\x1f\x8bjunk"),
             s(400), {("segment", "body"): 1}),
        Case("segment too large", req("POST", "/v1/track", {"Content-Type": "application/json", **auth},
                                      b'{"x": "' + b"y" * (40 * 1024) + b'"}'), s(413), {("segment", "body"): 1}),
        Case("segment wrong key", req("POST", "/v1/track", {"Authorization": "Basic Zm9vOg=="}, b"{}"), s(401)),
        Case("segment unknown call", req("POST", "/v1/nope", auth, b"{}"), s(404)),
        Case("snowplow bad json", req("POST", sp, {"Content-Type": "application/json"}, b"[[["), s(400),
             {("snowplow_post", "body"): 1}),
        # ---- methods, paths -------------------------------------------------------------------
        Case("delete form", req("DELETE", "/t/form"), s(405)),
        Case("put pixel", req("PUT", "/t/p.gif", {}, b"x"), s(405)),
        Case("trace", req("TRACE", "/t/p.gif"), s(405)),
        Case("made-up method", req("BREW", "/t/form"), s(400, 405, 501)),
        Case("get form", req("GET", "/t/form"), s(405)),
        Case("unknown path", req("GET", "/wp-admin/setup.php"), s(404)),
        Case("traversal", req("GET", "/t/../../../../etc/passwd"), s(400, 404)),
        Case("encoded traversal", req("GET", "/t/o/..%2f..%2f..%2fetc%2fpasswd.gif"), s(200),
             {("email_open", "token"): 1}, gif=True),
        Case("absolute-form target", req("GET", "http://evil.test/t/p.gif"), s(200, 400, 404)),
        Case("asterisk target", req("OPTIONS", "*"), s(400, 404, 405)),
        Case("very long path", req("GET", "/" + "a" * 20000), s(400, 404, 414)),
        Case("nul in path", b"GET /t/p\x00.gif HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", s(400, 404)),
        Case("http/0.9 style", b"GET /t/p.gif\r\n\r\n", s(200, 400, 505), gif=True),
        Case("bad version", b"GET /t/p.gif HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n", s(400, 505)),
        Case("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
             s(400)),
        # ---- header abuse -----------------------------------------------------------------------
        Case("huge header", req("GET", "/t/p.gif", {"X-Big": "a" * 20000}), s(400, 431)),
        Case("many headers", req("GET", "/t/p.gif", [(f"X-H{i}", "v") for i in range(300)]), s(200, 400, 431),
             gif=False),
        Case("huge cookie", req("GET", "/t/p.gif", {"Cookie": "lr_vid=" + "a" * 9000}), s(400, 431)),
        Case("header without colon", req("GET", "/t/p.gif", [("X-No-Colon-Here", "")]).replace(
            b"X-No-Colon-Here: ", b"X-No-Colon-Here"), s(400)),
        Case("space in header name", req("GET", "/t/p.gif", [("Bad Name", "v")]), s(400)),
        Case("nul in header value", req("GET", "/t/p.gif", [("X-Nul", "a\x00b")]), s(400)),
        Case("obsolete line folding", req("GET", "/t/p.gif", [("X-Fold", "a\r\n folded")]), s(400)),
        Case("two content-lengths", req("POST", "/t/form", [("Content-Type", "application/json"),
                                                             ("Content-Length", "2"), ("Content-Length", "40")],
                                        b"{}"), s(400)),
        Case("negative content-length", req("POST", "/t/form", [("Content-Type", "application/json"),
                                                                 ("Content-Length", "-1")], b"{}"), s(400)),
        Case("content-length and chunked", req("POST", "/t/form", [
            ("Content-Type", "application/json"), ("Content-Length", "2"), ("Transfer-Encoding", "chunked")],
            chunked(b"{}")), s(400)),
        Case("bad chunk size", req("POST", "/t/form", [("Content-Type", "application/json"),
                                                        ("Transfer-Encoding", "chunked")], b"zz\r\n{}\r\n0\r\n\r\n"),
             s(400)),
        Case("unknown transfer-encoding", req("POST", "/t/form", [
            ("Content-Type", "application/json"), ("Transfer-Encoding", "gzip, identity")], b"{}"), s(400, 501)),
        Case("huge content-length, tiny body", req("POST", "/t/form", [
            ("Content-Type", "application/json"), ("Content-Length", "99999999999999999999")], b"{}"), s(400, 413)),
        Case("x-forwarded-for junk", req("GET", "/t/p.gif?url=https://a.test/", {
            "X-Forwarded-For": "999.1.1.1, <script>, ::::::", "DNT": "maybe", "Sec-GPC": "\x7f"}), s(200, 400)),
        Case("expect continue refused early", req("POST", "/t/form", {
            "Content-Type": "application/json", "Expect": "100-continue",
            "Content-Length": str(10 * MAX_FORM_BYTES)}), s(413, 417)),
    ]
    return out


async def exchange(port: int, raw: bytes, timeout: float = 15.0) -> bytes:
    """Write ``raw`` (while reading, so a server that answers early never blocks us) and read the answer.

    Reading stops at EOF or once a complete final response is in (a server that
    answered early may linger, waiting for a body that is never sent).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write() -> None:
        for i in range(0, len(raw), 64 * 1024):
            writer.write(raw[i:i + 64 * 1024])
            await writer.drain()

    async def read() -> bytes:
        data = b""
        while chunk := await reader.read(64 * 1024):
            data += chunk
            if complete(data):
                break
        return data

    sender = asyncio.create_task(write())
    try:
        return await asyncio.wait_for(read(), timeout)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


def complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole final (non-1xx) response with a Content-Length."""
    while b"\r\n\r\n" in data:
        head, _, body = data.partition(b"\r\n\r\n")
        parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(parts) >= 2 and parts[1].isdigit() and 100 <= int(parts[1]) < 200:
            data = body
            continue
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                return len(body) >= int(value.strip())
        return False
    return False


def parse_response(data: bytes) -> tuple[int, bytes]:
    """(status, body) of the final response; interim ``1xx`` answers (100 Continue) are skipped."""
    while True:
        head, _, body = data.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0]
        parts = status_line.split(b" ", 2)
        assert len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit(), \
            f"no status line: {data[:200]!r}"
        if not 100 <= int(parts[1]) < 200:
            break
        data = body
    if b"transfer-encoding: chunked" in head.lower():
        decoded = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded += rest[:size]
            body = rest[size + 2:]
        body = decoded
    else:
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                body = body[:int(value.strip())]
    return int(parts[1]), body


async def test_malformed_burst_is_answered_counted_and_survived(stack_of: Callable[..., Any]) -> None:
    st: Stack = await stack_of(worker=False, segment_write_keys=WRITE_KEY)
    port = st.settings.ingest.collector_port
    metrics_url = st.metrics_url
    before = metric_family(await fetch_metrics(metrics_url), "leadrouter_collector_invalid_total", "endpoint", "field")
    burst = cases()
    expected: Counter[tuple[str, str]] = Counter()
    for case in burst:
        expected.update(case.invalid)

    problems: list[str] = []
    sem = asyncio.Semaphore(16)

    async def one(case: Case) -> None:
        async with sem:
            try:
                data = await exchange(port, case.raw)
            except (ConnectionError, TimeoutError) as exc:
                problems.append(f"{case.name}: {exc!r}")
                return
        try:
            status, body = parse_response(data)
        except AssertionError as exc:
            problems.append(f"{case.name}: {exc}")
            return
        if status not in case.statuses:
            problems.append(f"{case.name}: status {status} not in {sorted(case.statuses)}: {body[:300]!r}")
        if status >= 500 and status != 503:
            problems.append(f"{case.name}: server error {status}")
        if case.gif and status == 200 and len(body) != GIF_LEN:
            problems.append(f"{case.name}: pixel body of {len(body)} bytes, not the GIF")

    # Twice over, concurrently: a burst, not a polite sequence.
    await asyncio.gather(*(one(c) for c in burst + burst))
    if problems:
        pytest.fail("\n".join(sorted(set(problems))), pytrace=False)
    assert st.collector.alive(), st.collector.log_tail(60)

    after = metric_family(await fetch_metrics(metrics_url), "leadrouter_collector_invalid_total", "endpoint", "field")
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    delta = {k: int(v) for k, v in delta.items() if v}
    want = {k: 2 * v for k, v in expected.items()}
    assert delta == want, f"invalid counters grew by {sorted(delta.items())}, expected {sorted(want.items())}"

    # Still serving: a valid form is accepted, the pixel still answers its GIF.
    async with aiohttp.ClientSession(headers={"User-Agent": BROWSER_UA}) as session:
        async with session.post(f"{st.url}/t/form", json={"form_id": "contact-us",
                                                          "email": "after.burst@mailinator.com"}) as r:
            assert r.status == 202, await r.text()
        async with session.get(f"{st.url}/t/p.gif", params={"url": "https://a.test/"}) as r:
            assert r.status == 200 and len(await r.read()) == GIF_LEN
        async with session.get(f"{st.url}/healthz") as r:
            assert r.status == 200
    requests = metric_family(await fetch_metrics(metrics_url), "leadrouter_collector_requests_total",
                             "endpoint", "outcome")
    assert not {k: v for k, v in requests.items() if k[1] == "error"}, requests


async def test_undecodable_form_bodies_are_counted_as_invalid(stack_of: Callable[..., Any]) -> None:
    st: Stack = await stack_of(worker=False)
    metrics_url = st.metrics_url
    before = metric_family(await fetch_metrics(metrics_url), "leadrouter_collector_invalid_total", "endpoint", "field")
    bad = [
        req("POST", "/t/form", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"not gzip at all"),
        req("POST", "/t/form", {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"},
            b"form_id=contact-us&email=a%40b.co"),
        req("POST", "/t/form", {"Content-Type": "application/json", "Content-Encoding": "compress"}, GOOD_FORM),
    ]
    for raw in bad:
        status, body = parse_response(await exchange(st.settings.ingest.collector_port, raw))
        assert status in (400, 415), body  # answered, not a 5xx: this part holds
    assert st.collector.alive()
    after = metric_family(await fetch_metrics(metrics_url), "leadrouter_collector_invalid_total", "endpoint", "field")
    assert after.get(("form", "body"), 0) - before.get(("form", "body"), 0) == len(bad)


async def test_truncated_gzip_body_is_rejected(stack_of: Callable[..., Any]) -> None:
    st: Stack = await stack_of(worker=False)
    cut = GZ_FORM[:-8]  # the whole deflate stream, without the gzip trailer
    raw = req("POST", "/t/form", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, cut)
    status, body = parse_response(await exchange(st.settings.ingest.collector_port, raw))
    assert status == 400, f"a truncated gzip body was answered {status}: {body[:200]!r}"
