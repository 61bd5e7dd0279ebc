"""The Taobao replay's pure parts: reading the real clickstream, the densest window, the schedule, the requests."""

from __future__ import annotations

import itertools
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from bench.taobao import (
    Click,
    Shop,
    Shopper,
    TaobaoDataError,
    densest_window,
    peak_rate,
    read_clicks,
    schedule,
)
from router.dev.demo import HAND_RAISER_FORM
from tests.conftest import datasets_or_skip


def click(ts: float, user: str = "7", behavior: str = "pv", item: str = "42") -> Click:
    return Click(ts=ts, user=user, item=item, category="9", behavior=behavior)  # type: ignore[arg-type]


def test_the_real_clickstream_is_read_in_time_order_without_its_out_of_span_rows() -> None:
    clicks, dropped = read_clicks(datasets_or_skip() / "taobao_userbehavior_events.csv")
    # The datasets README: 32 rows lie outside 2017-11-25..12-03 (China time); 659 users.
    assert dropped == 32
    assert len({c.user for c in clicks}) == 659
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(clicks))
    assert {c.behavior for c in clicks} == {"pv", "fav", "cart", "buy"}


def test_a_bad_timestamp_names_the_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "ub.csv"
    f.write_text("user_id,item_id,category_id,behavior_type,timestamp\n1,2,3,pv,1511550516\n1,2,3,pv,soon\n")
    with pytest.raises(TaobaoDataError, match=r"ub.csv:3: timestamp 'soon'"):
        read_clicks(f)
    with pytest.raises(TaobaoDataError, match="absent"):
        read_clicks(tmp_path / "missing.csv")


def test_the_densest_window_holds_the_burst_not_the_first_rows() -> None:
    base = 1_511_600_000.0
    quiet = [click(base + i * 600) for i in range(5)]  # one every 10 minutes
    burst = [click(base + 10_000 + i) for i in range(20)]  # twenty in 20 seconds
    window = densest_window(quiet + burst + [click(base + 20_000)], 60.0)
    assert window == burst
    assert densest_window([], 60.0) == []


def test_the_schedule_divides_the_real_gaps_by_the_speed() -> None:
    clicks = [click(100.0), click(110.0), click(110.0), click(200.0)]
    assert [o for o, _ in schedule(clicks, 10.0)] == [0.0, 1.0, 1.0, 10.0]
    assert peak_rate(o for o, _ in schedule(clicks, 10.0)) == 2
    with pytest.raises(ValueError, match="above 0"):
        schedule(clicks, 0.0)


def test_the_first_buy_raises_a_hand_and_later_buys_are_content_forms() -> None:
    shop = Shop()
    view = shop.request(click(1.0, behavior="pv"))
    assert view.kind == "page" and view.method == "GET"
    params = parse_qs(urlsplit(view.path).query)
    assert params["vid"] == [Shopper("7").vid] and params["url"][0].endswith("/products/9/42")
    again = shop.request(click(2.0, behavior="cart"))
    assert "vid" not in parse_qs(urlsplit(again.path).query)  # the browser has the cookie now
    assert again.headers["Cookie"] == f"lr_vid={Shopper('7').vid}"
    assert parse_qs(urlsplit(again.path).query)["url"][0].endswith("/pricing?plan=team")
    first = shop.request(click(3.0, behavior="buy"))
    second = shop.request(click(4.0, behavior="buy"))
    assert first.kind == "demo" and second.kind == "form"
    body = parse_qs(first.body.decode())
    assert body["form_id"] == [HAND_RAISER_FORM] and body["email"] == [Shopper("7").email]
    assert parse_qs(second.body.decode())["form_id"] != [HAND_RAISER_FORM]
    # A browser's user agent and the shopper's own address behind the (trusted) proxy: not flagged as a script.
    assert "Mozilla" in first.headers["User-Agent"] and first.headers["X-Forwarded-For"].startswith("203.0.")
