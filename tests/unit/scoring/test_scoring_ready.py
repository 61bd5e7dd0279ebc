"""The sales-ready rule: clauses in scoring.yaml, their JSON form for Lua, and evaluation."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring import (
    ReadyClause,
    SalesReady,
    ScoringConfigError,
    clauses_from_json,
    is_sales_ready,
    load_scoring_config,
    ready_clauses_json,
    should_recycle,
)

SHIPPED = Path(__file__).resolve().parents[3] / "scoring" / "scoring.yaml"

RULES = "rules:\n  - name: page\n    description: Any page.\n    event: page_view\n    points: 1\n"


def with_ready(section: str, threshold: str = "100") -> str:
    """``threshold`` on line 1, ``sales_ready:`` on line 2, the section's own lines from line 3."""
    return f"threshold: {threshold}\nsales_ready:\n" + textwrap.indent(textwrap.dedent(section), "  ") + RULES


def error(text: str) -> str:
    with pytest.raises(ScoringConfigError) as info:
        load_scoring_config(text, "bad.yaml")
    return str(info.value)


EXAMPLE = """\
any:
  - {engagement_at_least: 100, grade_in: [A, B]}
  - {probability_at_least: 0.6}
  - {hand_raiser: true}
recycle_below: 30
"""


# --------------------------------------------------------------------------- loading


def test_example_section_parses() -> None:
    config = load_scoring_config(with_ready(EXAMPLE))
    assert config.sales_ready is not None and config.ready is config.sales_ready
    first, second, third = config.ready.clauses
    assert (first.min_score, first.grades, first.min_p, first.hand_raiser) == (100.0, ("A", "B"), None, False)
    assert (second.min_p, second.min_score, second.grades) == (0.6, None, ())
    assert third.hand_raiser is True
    assert config.ready.recycle_below == 30.0
    assert [c.line for c in config.ready.clauses] == [4, 5, 6]


def test_absent_section_defaults_to_threshold_or_hand_raiser() -> None:
    config = load_scoring_config("threshold: 80\n" + RULES)
    assert config.sales_ready is None
    assert config.ready == SalesReady(clauses=(ReadyClause(min_score=80), ReadyClause(hand_raiser=True)))
    assert ready_clauses_json(config) == (
        '[{"min_score":80,"label":"engagement>=80"},{"hand_raiser":true,"label":"hand-raiser"}]'
    )
    assert is_sales_ready(config.ready, 80.0, None, None, False) == "engagement>=80"
    assert is_sales_ready(config.ready, 79.9, None, None, True) == "hand-raiser"
    assert is_sales_ready(config.ready, 79.9, "A", 0.99, False) is None
    assert should_recycle(config.ready, -1000.0) is False


def test_section_changes_the_version() -> None:
    plain = load_scoring_config("threshold: 100\n" + RULES)
    default_written_out = load_scoring_config(
        with_ready("any:\n  - {engagement_at_least: 100}\n  - {hand_raiser: true}\n")
    )
    assert default_written_out.ready == plain.ready
    assert default_written_out.version != plain.version  # the file says more, so it hashes differently
    again = load_scoring_config(with_ready(EXAMPLE.replace("[A, B]", "[b, a]")))
    assert again.version == load_scoring_config(with_ready(EXAMPLE)).version  # letters are sorted, upper


def test_block_style_and_single_grade() -> None:
    config = load_scoring_config(
        with_ready("any:\n  - engagement_at_least: 50\n    grade_in: A\n    probability_at_least: 1\n")
    )
    (clause,) = config.ready.clauses
    assert clause.grades == ("A",) and clause.min_p == 1.0 and clause.min_score == 50.0


# --------------------------------------------------------------------------- validation


def test_unknown_clause_key_suggests() -> None:
    msg = error(with_ready("any:\n  - {engagement_at_leest: 100}\n"))
    assert msg.startswith("bad.yaml:4: sales_ready clause #1: unknown key 'engagement_at_leest'")
    assert "did you mean 'engagement_at_least'?" in msg
    assert "valid keys: engagement_at_least, grade_in, probability_at_least, hand_raiser" in msg


def test_unknown_section_key_suggests() -> None:
    msg = error(with_ready("any:\n  - {hand_raiser: true}\nrecycle_bellow: 3\n"))
    assert msg.startswith("bad.yaml:5: sales_ready: unknown key 'recycle_bellow'")
    assert "did you mean 'recycle_below'?" in msg


def test_misspelt_section_name_suggests() -> None:
    msg = error("threshold: 100\nsales_redy:\n  any: []\n" + RULES)
    assert msg.startswith("bad.yaml:2: top level: unknown key 'sales_redy'")
    assert "did you mean 'sales_ready'?" in msg


def test_any_is_required_and_non_empty() -> None:
    assert error(with_ready("recycle_below: 3\n")).startswith(
        "bad.yaml:3: sales_ready: missing required key 'any'"
    )
    assert error(with_ready("any: []\n")).startswith(
        "bad.yaml:3: sales_ready: 'any' must be a non-empty list, got an empty list"
    )
    assert "got a mapping" in error(with_ready("any:\n  hand_raiser: true\n"))


def test_section_must_be_a_mapping() -> None:
    msg = error("threshold: 100\nsales_ready: [a]\n" + RULES)
    assert msg.startswith("bad.yaml:2: sales_ready: 'sales_ready' must be a mapping, got a list")


def test_empty_clause() -> None:
    msg = error(with_ready("any:\n  - {}\n"))
    assert msg.startswith("bad.yaml:4: sales_ready clause #1: is empty")


def test_clause_must_be_a_mapping() -> None:
    msg = error(with_ready("any:\n  - hand_raiser\n"))
    assert msg.startswith("bad.yaml:4: sales_ready clause #1: a clause must be a mapping, got a value")


def test_bad_grade_letter() -> None:
    msg = error(with_ready("any:\n  - {grade_in: [A, E]}\n"))
    assert msg.startswith("bad.yaml:4: sales_ready clause #1: 'grade_in' has unknown grade 'E'")
    assert "use letters from A, B, C, D" in msg
    ungraded = error(with_ready("any:\n  - {grade_in: ['?']}\n"))
    assert "an ungraded lead ('?') never qualifies by grade" in ungraded


@pytest.mark.parametrize("p", ["1.5", "-0.1"])
def test_probability_out_of_range(p: str) -> None:
    msg = error(with_ready(f"any:\n  - {{probability_at_least: {p}}}\n"))
    assert msg.startswith("bad.yaml:4: sales_ready clause #1: 'probability_at_least' must be at")
    assert "use a number from 0 to 1" in msg


def test_hand_raiser_false_is_not_a_condition() -> None:
    msg = error(with_ready("any:\n  - {hand_raiser: false}\n"))
    assert msg.startswith("bad.yaml:4: sales_ready clause #1: 'hand_raiser: false' is not a condition")


def test_engagement_must_be_a_number() -> None:
    msg = error(with_ready("any:\n  - {engagement_at_least: high}\n"))
    assert msg.startswith(
        "bad.yaml:4: sales_ready clause #1: 'engagement_at_least' must be a number, got text 'high'"
    )


def test_recycle_below_must_be_under_every_engagement_level_and_the_threshold() -> None:
    msg = error(with_ready("any:\n  - {engagement_at_least: 40}\nrecycle_below: 50\n"))
    assert msg.startswith(
        "bad.yaml:5: sales_ready: 'recycle_below' 50 is not below the clause #1 engagement_at_least 40"
    )
    assert "sales-ready and recycled at once" in msg
    msg = error(with_ready("any:\n  - {hand_raiser: true}\nrecycle_below: 100\n"))
    assert "is not below the threshold 100" in msg
    assert error(with_ready("any:\n  - {hand_raiser: true}\nrecycle_below: -1\n")).startswith(
        "bad.yaml:5: sales_ready: 'recycle_below' must be at least 0"
    )


def test_direct_construction_validates() -> None:
    with pytest.raises(ScoringConfigError, match="at least one condition"):
        ReadyClause()
    with pytest.raises(ScoringConfigError, match="grades"):
        ReadyClause(grades=("?",))
    with pytest.raises(ScoringConfigError, match="min_p"):
        ReadyClause(min_p=2.0)
    with pytest.raises(ScoringConfigError, match="at least one clause"):
        SalesReady(clauses=())


# --------------------------------------------------------------------------- JSON for Lua


def test_clause_json_form() -> None:
    config = load_scoring_config(with_ready(EXAMPLE))
    text = ready_clauses_json(config)
    assert text == (
        '[{"min_score":100,"grades":["A","B"],"label":"engagement>=100 & grade in A,B"},'
        '{"min_p":0.6,"label":"probability>=0.6"},'
        '{"hand_raiser":true,"label":"hand-raiser"}]'
    )
    assert clauses_from_json(text) == tuple(
        ReadyClause(min_score=c.min_score, grades=c.grades, min_p=c.min_p, hand_raiser=c.hand_raiser)
        for c in config.ready.clauses
    )
    assert ready_clauses_json(config.ready) == text


def test_clause_json_keeps_fractions_and_every_condition() -> None:
    clause = ReadyClause(min_score=99.5, grades=("A",), min_p=0.75, hand_raiser=True)
    obj = json.loads(ready_clauses_json(SalesReady(clauses=(clause,))))[0]
    assert obj == {
        "min_score": 99.5,
        "grades": ["A"],
        "min_p": 0.75,
        "hand_raiser": True,
        "label": "engagement>=99.5 & grade in A & probability>=0.75 & hand-raiser",
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        ('{"min_score": 1}', "must be a JSON list"),
        ("[1]", "must be a JSON object"),
        ('[{"min": 1}]', "unknown keys ['min']"),
        ('[{"grades": "A"}]', "'grades' must be a list"),
        ('[{"min_p": "0.5"}]', "'min_p' must be a number"),
        ('[{"hand_raiser": 1}]', "'hand_raiser' must be true"),
        ("[{}]", "at least one condition"),
    ],
)
def test_clauses_from_json_rejects_what_ready_clauses_json_never_writes(text: str, problem: str) -> None:
    with pytest.raises(ScoringConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        clauses_from_json(text)


# --------------------------------------------------------------------------- evaluation

CLAUSES = (
    ReadyClause(min_score=100, grades=("A", "B")),
    ReadyClause(min_p=0.6),
    ReadyClause(hand_raiser=True),
)


@pytest.mark.parametrize(
    ("score", "grade", "p", "hand", "fired"),
    [
        (100.0, "A", None, False, "engagement>=100 & grade in A,B"),
        (150.0, "B", 0.9, True, "engagement>=100 & grade in A,B"),  # first clause that holds wins
        (99.99, "A", None, False, None),
        (120.0, "C", None, False, None),
        (120.0, "?", None, False, None),  # ungraded never satisfies a grade condition
        (120.0, None, None, False, None),  # no grade either
        (0.0, None, 0.6, False, "probability>=0.6"),
        (0.0, None, 0.59, False, None),
        (500.0, "A", math.nan, False, "engagement>=100 & grade in A,B"),
        (0.0, "A", math.nan, False, None),  # NaN probability is no probability
        (-5.0, "D", None, True, "hand-raiser"),
        (-5.0, "D", None, False, None),
    ],
)
def test_is_sales_ready_table(
    score: float, grade: str | None, p: float | None, hand: bool, fired: str | None
) -> None:
    assert is_sales_ready(CLAUSES, score, grade, p, hand) == fired


def test_clause_needs_every_condition() -> None:
    clause = ReadyClause(min_score=50, min_p=0.5, hand_raiser=True)
    assert clause.holds(50, None, 0.5, True)
    assert not clause.holds(49, None, 0.5, True)
    assert not clause.holds(50, None, None, True)
    assert not clause.holds(50, None, 0.5, False)


def test_recycle() -> None:
    ready = SalesReady(clauses=CLAUSES, recycle_below=30)
    assert should_recycle(ready, 29.99) is True
    assert should_recycle(ready, 30.0) is False


def lua_like(text: str, score: float, grade: str | None, p: float | None, hand: bool) -> str | None:
    """The rule written the way the Lua script reads it: from the JSON only."""
    for c in json.loads(text):
        if "min_score" in c and not score >= c["min_score"]:
            continue
        if "grades" in c and grade not in c["grades"]:
            continue
        if "min_p" in c and (p is None or p != p or not p >= c["min_p"]):
            continue
        if c.get("hand_raiser") and not hand:
            continue
        return str(c["label"])
    return None


@st.composite
def valid_clause(draw: st.DrawFn) -> ReadyClause:
    min_score = draw(st.one_of(st.none(), st.floats(min_value=-50, max_value=300, allow_nan=False)))
    grades = tuple(sorted(draw(st.lists(st.sampled_from("ABCD"), unique=True))))
    min_p = draw(st.one_of(st.none(), st.floats(min_value=0, max_value=1)))
    hand = draw(st.booleans())
    if min_score is None and not grades and min_p is None and not hand:
        hand = True
    return ReadyClause(min_score=min_score, grades=grades, min_p=min_p, hand_raiser=hand)


@given(
    clauses=st.lists(valid_clause(), min_size=1, max_size=5),
    score=st.floats(min_value=-100, max_value=400, allow_nan=False),
    grade=st.one_of(st.none(), st.sampled_from(["A", "B", "C", "D", "?"])),
    p=st.one_of(st.none(), st.just(math.nan), st.floats(min_value=0, max_value=1)),
    hand=st.booleans(),
)
def test_json_round_trip_and_lua_reading_agree(
    clauses: list[ReadyClause], score: float, grade: str | None, p: float | None, hand: bool
) -> None:
    ready = SalesReady(clauses=tuple(clauses))
    text = ready_clauses_json(ready)
    assert clauses_from_json(text) == ready.clauses
    assert lua_like(text, score, grade, p, hand) == is_sales_ready(ready, score, grade, p, hand)


def test_shipped_sales_ready() -> None:
    config = load_scoring_config(SHIPPED.read_text(encoding="utf-8"), str(SHIPPED))
    assert config.sales_ready is not None
    assert [c.label for c in config.ready.clauses] == [
        "engagement>=100 & grade in A,B",
        "engagement>=150",
        "probability>=0.6",
        "hand-raiser",
    ]
    assert config.ready.recycle_below == 30.0
    assert is_sales_ready(config.ready, 110, "?", None, False) is None
    assert is_sales_ready(config.ready, 110, "B", None, False) == "engagement>=100 & grade in A,B"
