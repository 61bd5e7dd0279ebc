"""The ``sales_ready.reengage`` block: parsed, defaulted and refused with file:line and a fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scoring import Reengage, ScoringConfigError, load_scoring_config, reengage_json

REPO = Path(__file__).resolve().parents[3]
SHIPPED = (REPO / "scoring" / "scoring.yaml").read_text()


def with_block(block: str) -> str:
    start = SHIPPED.index("  # Re-engagement:")
    end = SHIPPED.index("\nrules:")
    return SHIPPED[:start] + block + SHIPPED[end:]


def test_the_shipped_file_declares_re_engagement() -> None:
    config = load_scoring_config(SHIPPED, "scoring.yaml")
    re = config.ready.reengage_rules
    assert re.hand_raiser == ("nurture", "sal", "sql", "opportunity", "won", "lost")
    assert re.score_after_s("lost") == 30 * 86400 and re.score_after_s("nurture") == 0
    assert re.score_after_s("won") is None and re.cooldown_s == 24 * 3600
    assert json.loads(reengage_json(config)) == {
        "hs": dict.fromkeys(re.hand_raiser, True), "ss": {"nurture": 0, "lost": 2592000}, "cd": 86400}


def test_without_the_block_only_nurture_re_fires_and_the_version_is_unchanged() -> None:
    config = load_scoring_config(with_block(""), "scoring.yaml")
    assert config.ready.reengage is None and config.ready.reengage_rules == Reengage()
    assert Reengage().hand_raiser == ("nurture",) and Reengage().score == (("nurture", 0.0),)
    # Files that never had the block keep the version they always had (the shipped file
    # before the block was added: identify window, account intent and named-event rules).
    assert config.version == "2ed519964496"
    assert load_scoring_config(SHIPPED).version != config.version


def test_a_list_with_score_after_days_applies_the_days_to_every_stage() -> None:
    block = "  reengage:\n    score: [lost, won]\n    score_after_days: 14\n"
    re = load_scoring_config(with_block(block)).ready.reengage_rules
    assert re.score == (("lost", 14 * 86400.0), ("won", 14 * 86400.0))
    assert re.hand_raiser == ("nurture",)  # the default for what is not given
    none = load_scoring_config(with_block("  reengage:\n    score: []\n    hand_raiser: [lost]\n")).ready
    assert none.reengage_rules.score == ()


@pytest.mark.parametrize(("block", "message"), [
    ("  reengage:\n    hand_raiser: [lsot]\n",
     r"scoring\.yaml:\d+: sales_ready reengage: 'hand_raiser' has stage 'lsot': .*did you mean 'lost'\?"),
    ("  reengage:\n    score: [mql]\n",
     r"'score' has stage 'mql': an mql lead has an open, unaccepted assignment and never re-fires"),
    ("  reengage:\n    score: {known: 3}\n", r"'score' has stage 'known'"),
    ("  reengage:\n    score: {lost: 30}\n    score_after_days: 5\n", r"ambiguous; keep the days in 'score"),
    ("  reengage:\n    score: []\n    score_after_days: 5\n", r"'score_after_days' has no effect"),
    ("  reengage:\n    cooldown_hours: -1\n", r"'cooldown_hours' must be at least 0"),
    ("  reengage:\n    score: {lost: soon}\n", r"'score lost' must be a number"),
    ("  reengage:\n    cooldown: 3\n", r"unknown key 'cooldown'; did you mean 'cooldown_hours'\?"),
    ("  reengage: {}\n", r"sales_ready reengage: is empty"),
])
def test_bad_blocks_name_the_line_and_the_fix(block: str, message: str) -> None:
    text = with_block(block)
    with pytest.raises(ScoringConfigError, match=message) as info:
        load_scoring_config(text, "scoring.yaml")
    line = int(str(info.value).split(":")[1])
    first = SHIPPED[:SHIPPED.index("  # Re-engagement:")].count("\n") + 1
    assert first <= line < first + block.count("\n")  # a line of the block itself


def test_the_model_refuses_what_the_loader_would() -> None:
    with pytest.raises(ScoringConfigError, match="stages must be from"):
        Reengage(hand_raiser=("mql",))
    with pytest.raises(ScoringConfigError, match="must be a finite number >= 0"):
        Reengage(score=(("lost", -1.0),))
