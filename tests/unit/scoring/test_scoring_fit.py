"""Fit grade A-D from the ideal customer profile (icp.yaml)."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring import (
    FitGrade,
    IcpConfig,
    IcpConfigError,
    ScoringConfigError,
    fit_grade,
    load_icp_config,
    parse_employees,
)
from scoring.icp import CRITERIA, ClassCriterion, ListChoice, ListCriterion, normalise_country

SHIPPED = Path(__file__).resolve().parents[3] / "scoring" / "icp.yaml"

# Weights: industry 40, employees 30, country 10, seniority 10, department 10 = 100.
SMALL = """\
grades: {A: 70, B: 50, C: 30}
min_known: 0.4
industry:
  description: Who we sell to.
  match:
    - {points: 40, values: [software, saas]}
    - {points: 20, values: [financial services]}
    - {points: -10, values: [government]}
  other: 5
employees:
  description: Head count.
  bands:
    - {max: 49, points: 0}
    - {min: 50, max: 999, points: 30}
    - {min: 1000, points: 15}
country:
  description: Markets.
  match:
    - {points: 10, values: [US, gb, NO]}
seniority:
  description: How senior.
  points: {c_level: 10, vp: 10, director: 8, manager: 5}
department:
  description: Which team.
  points: {sales: 10, revenue_ops: 10, marketing: 6}
"""


@pytest.fixture(scope="module")
def small() -> IcpConfig:
    return load_icp_config(SMALL, "icp.yaml")


@pytest.fixture(scope="module")
def shipped() -> IcpConfig:
    return load_icp_config(SHIPPED.read_text(encoding="utf-8"), str(SHIPPED))


def error(text: str) -> str:
    with pytest.raises(IcpConfigError) as info:
        load_icp_config(textwrap.dedent(text), "icp.yaml")
    return str(info.value)


def replace_line(old: str, new: str) -> str:
    assert old in SMALL
    return SMALL.replace(old, new)


FULL = {"industry": "Computer Software", "employees": "201-500", "country": "US", "job_title": "VP Sales"}


# --------------------------------------------------------------------------- loading


def test_small_config_parses(small: IcpConfig) -> None:
    assert dict(small.grades) == {"A": 70.0, "B": 50.0, "C": 30.0}
    assert small.min_known == 0.4
    assert small.total_weight == 100.0
    assert small.industry is not None and small.industry.choices[0] == ListChoice(
        points=40.0, values=("software", "saas"), line=6
    )
    assert small.industry.weight == 40.0
    assert small.country is not None and small.country.choices[0].values == ("US", "GB", "NO")
    assert small.employees is not None and [b.label for b in small.employees.bands] == [
        "0-49",
        "50-999",
        "1000+",
    ]
    assert small.seniority == ClassCriterion(
        description="How senior.", points={"c_level": 10.0, "vp": 10.0, "director": 8.0, "manager": 5.0}
    )
    assert re.fullmatch(r"[0-9a-f]{12}", small.version)


def test_version_ignores_formatting_but_not_content(small: IcpConfig) -> None:
    assert load_icp_config("# comment\n" + SMALL).version == small.version
    assert load_icp_config(SMALL.replace("A: 70", "A: 75")).version != small.version


def test_criteria_are_optional_but_one_is_needed() -> None:
    config = load_icp_config(
        "grades: {A: 70, B: 50, C: 30}\ncountry:\n  description: d\n  match:\n    - {points: 1, values: [US]}\n"
    )
    assert list(config.criteria()) == ["country"]
    assert config.min_known == 0.4
    msg = error("grades: {A: 70, B: 50, C: 30}\n")
    assert msg.startswith("icp.yaml:1: top level: no criteria; add at least one of: industry, employees")


def test_shipped_icp_loads(shipped: IcpConfig) -> None:
    assert list(shipped.criteria()) == list(CRITERIA)
    assert shipped.total_weight == 100.0
    assert all(c.description for c in shipped.criteria().values())
    assert dict(shipped.grades) == {"A": 70.0, "B": 50.0, "C": 30.0}
    assert shipped.min_known == 0.4
    assert shipped.country is not None and any("NO" in c.values for c in shipped.country.choices)
    best = fit_grade(FULL, shipped)
    assert best.letter == "A" and best.missing == ()
    assert fit_grade({"job_title": "Head of RevOps"}, shipped).letter == "?"
    hobbyist = {"industry": "Higher Education", "employees": "1-10", "country": "BR", "job_title": "Student"}
    assert fit_grade(hobbyist, shipped).letter == "D"


# --------------------------------------------------------------------------- grading


def test_full_profile_scores_every_criterion(small: IcpConfig) -> None:
    grade = fit_grade(FULL, small)
    assert grade == FitGrade(
        letter="A",
        points=100.0,
        reasons=(
            "industry 'Computer Software' is software: +40 of 40",
            "employees '201-500' (~350) in 50-999: +30 of 30",
            "country US: +10 of 10",
            "seniority vp (title 'VP Sales'): +10 of 10",
            "department sales (title 'VP Sales'): +10 of 10",
        ),
        missing=(),
        raw=100.0,
        possible=100.0,
        known_share=1.0,
    )
    assert grade.graded


def test_missing_fields_are_listed_and_not_scored_as_zero(small: IcpConfig) -> None:
    grade = fit_grade({"industry": "SaaS", "employees": "  ", "job_title": "VP Sales"}, small)
    assert grade.missing == ("employees", "country")
    # Known: industry 40 + seniority 10 + department 10 = 60 of 60 -> 100, not 60.
    assert (grade.raw, grade.possible, grade.points, grade.known_share) == (60.0, 60.0, 100.0, 0.6)
    assert grade.letter == "A"
    assert not any(r.startswith(("employees", "country")) for r in grade.reasons)


def test_normalisation_is_on_the_known_weight(small: IcpConfig) -> None:
    # industry other (5 of 40) and employees 1000+ (15 of 30): 20 of 70 -> 28.571429 -> D
    grade = fit_grade({"industry": "Mining", "employees": "5000"}, small)
    assert grade.points == 28.571429
    assert grade.letter == "D"
    assert grade.missing == ("country", "seniority", "department")
    assert grade.known_share == 0.7


def test_too_little_known_is_ungraded_not_d(small: IcpConfig) -> None:
    grade = fit_grade({"job_title": "VP Sales", "country": "US"}, small)  # 30 of 100 known
    assert grade.letter == "?"
    assert not grade.graded
    assert grade.points == 100.0  # what is known fits perfectly; there is just not enough of it
    assert grade.known_share == 0.3
    assert grade.reasons[-1] == "ungraded: 30% of the profile's weight is known, 40% needed"
    nothing = fit_grade({}, small)
    assert (nothing.letter, nothing.points, nothing.known_share) == ("?", 0.0, 0.0)
    assert nothing.missing == CRITERIA


def test_exactly_min_known_is_graded(small: IcpConfig) -> None:
    grade = fit_grade({"industry": "software"}, small)  # 40 of 100 known
    assert grade.known_share == 0.4
    assert grade.letter == "A"


@pytest.mark.parametrize(
    ("industry", "employees", "letter", "points"),
    # industry x/40 + employees y/30 + country US 10 + vp 10 + sales 10; thresholds are inclusive
    [
        ("software", "10", "A", 70.0),
        ("financial services", "100", "A", 80.0),
        ("financial services", "10", "B", 50.0),
        ("Mining", "5000", "B", 50.0),
        ("Mining", "10", "C", 35.0),
        ("Government", "10", "D", 20.0),
    ],
)
def test_letters_follow_inclusive_thresholds(
    small: IcpConfig, industry: str, employees: str, letter: str, points: float
) -> None:
    fields = {"industry": industry, "employees": employees, "country": "US", "job_title": "VP Sales"}
    grade = fit_grade(fields, small)
    assert (grade.letter, grade.points) == (letter, points)


def test_thresholds_apply_to_the_normalised_points() -> None:
    config = load_icp_config(SMALL.replace("{A: 70, B: 50, C: 30}", "{A: 75, B: 50, C: 25}"))
    half = fit_grade({"industry": "financial services"}, config)  # 20 of 40 = 50 exactly
    assert (half.points, half.letter) == (50.0, "B")
    low = fit_grade({"industry": "Mining", "employees": "2000", "country": "US"}, config)  # 30 of 80
    assert (low.points, low.letter) == (37.5, "C")


def test_negative_points_can_push_below_zero(small: IcpConfig) -> None:
    grade = fit_grade({"industry": "Government Administration"}, small)
    assert grade.points == -25.0 and grade.letter == "D"
    assert grade.reasons[0] == "industry 'Government Administration' is government: -10 of 40"


def test_unreadable_values_are_missing_with_a_reason(small: IcpConfig) -> None:
    grade = fit_grade(
        {"industry": "software", "employees": "lots", "country": "United States", "job_title": "n/a"}, small
    )
    assert grade.missing == ("employees", "country", "seniority", "department")
    assert "employees 'lots' cannot be read as a head count; not scored" in grade.reasons
    assert "country 'United States' is not an ISO 3166 alpha-2 code; not scored" in grade.reasons
    assert "seniority: title 'n/a' does not say; not scored" in grade.reasons
    assert grade.letter == "A"  # 40 of 40 on the 40 % known


def test_title_with_seniority_but_no_department(small: IcpConfig) -> None:
    grade = fit_grade({"job_title": "CEO", "industry": "software"}, small)
    assert grade.missing == ("employees", "country", "department")
    assert "seniority c_level (title 'CEO'): +10 of 10" in grade.reasons


def test_unlisted_class_is_known_and_scores_zero(small: IcpConfig) -> None:
    grade = fit_grade({"job_title": "Software Engineer", "industry": "software"}, small)
    assert "seniority individual (title 'Software Engineer'): +0 of 10" in grade.reasons
    assert "department engineering (title 'Software Engineer'): +0 of 10" in grade.reasons
    assert grade.missing == ("employees", "country")


def test_industry_matches_whole_words_first_entry_wins(small: IcpConfig) -> None:
    reasons = fit_grade({"industry": "Financial Software"}, small).reasons
    assert reasons[0] == "industry 'Financial Software' is software: +40 of 40"
    reasons = fit_grade({"industry": "Softwarehouse"}, small).reasons
    assert reasons[0] == "industry 'Softwarehouse' is not in the profile: +5 of 40"
    reasons = fit_grade({"industry": "Financial-Services & Banking"}, small).reasons
    assert reasons[0] == "industry 'Financial-Services & Banking' is financial services: +20 of 40"


@pytest.mark.parametrize(("country", "code"), [("us", "US"), (" gb ", "GB"), ("UK", "GB"), ("no", "NO")])
def test_countries_are_normalised(small: IcpConfig, country: str, code: str) -> None:
    grade = fit_grade({"country": country, "industry": "x"}, small)
    assert f"country {code}: +10 of 10" in grade.reasons


def test_country_outside_the_lists_gets_other(small: IcpConfig) -> None:
    assert "country FR is not in the profile: +0 of 10" in fit_grade({"country": "fr"}, small).reasons


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("250", 250),
        ("1,000+", 1000),
        ("10,001+", 10001),
        ("51-200", 125),
        ("51 - 200", 125),
        ("201\u2013500", 350),
        ("1001-5000 employees", 3000),
        ("201 to 500", 350),
        ("10k", 10000),
        ("1.5K", 1500),
        ("2m", 2_000_000),
        ("over 500", 500),
        ("1 000", 1000),
        ("0", 0),
        ("lots", None),
        ("", None),
        ("200-51", None),
        ("-5", None),
        ("12.5.3", None),
    ],
)
def test_parse_employees(text: str, count: int | None) -> None:
    assert parse_employees(text) == count


@pytest.mark.parametrize(
    ("text", "code"), [("US", "US"), ("uk", "GB"), ("USA", None), ("1A", None), ("", None)]
)
def test_normalise_country(text: str, code: str | None) -> None:
    assert normalise_country(text) == code


fields_st = st.fixed_dictionaries(
    {},
    optional={
        "industry": st.sampled_from(["software", "Financial Services", "Government", "Mining", "", "???"]),
        "employees": st.sampled_from(["10", "51-200", "1,000+", "lots", "", "5k"]),
        "country": st.sampled_from(["US", "gb", "FR", "United States", ""]),
        "job_title": st.sampled_from(["VP Sales", "CEO", "Software Engineer", "n/a", "", "Head of RevOps"]),
    },
)


@given(fields_st)
def test_grade_invariants(fields: dict[str, str]) -> None:
    config = load_icp_config(SMALL)
    grade = fit_grade(fields, config)
    weights = {name: c.weight for name, c in config.criteria().items()}
    known = [n for n in CRITERIA if n not in grade.missing]
    assert math.isclose(grade.possible, sum(weights[n] for n in known))
    assert math.isclose(grade.known_share, grade.possible / 100.0, abs_tol=1e-9)
    assert (grade.letter == "?") == (grade.known_share < config.min_known)
    assert grade.points <= 100.0
    for name in CRITERIA:
        if not fields.get({"seniority": "job_title", "department": "job_title"}.get(name, name), "").strip():
            assert name in grade.missing  # absent or empty is always missing, never a zero
    if grade.possible:
        assert math.isclose(grade.points, 100 * grade.raw / grade.possible, abs_tol=1e-6)
    if grade.letter in "ABC" and grade.letter:
        assert grade.points >= config.grades[grade.letter]


# --------------------------------------------------------------------------- validation


def test_icp_errors_are_scoring_config_errors() -> None:
    assert issubclass(IcpConfigError, ScoringConfigError)


def test_unknown_top_level_key_suggests() -> None:
    msg = error(replace_line("industry:\n", "industy:\n"))
    assert msg.startswith("icp.yaml:3: top level: unknown key 'industy'")
    assert "did you mean 'industry'?" in msg


def test_unknown_criterion_key_suggests() -> None:
    msg = error(replace_line("  description: Head count.\n", "  descripton: Head count.\n"))
    assert msg.startswith("icp.yaml:11: employees: unknown key 'descripton'")
    assert "did you mean 'description'?" in msg


def test_missing_description() -> None:
    msg = error(replace_line("  description: Markets.\n", ""))
    assert msg.startswith(
        "icp.yaml:17: country: missing required key 'description'; add 'description:' to 'country'"
    )


def test_unknown_seniority_class_suggests() -> None:
    msg = error(replace_line("{c_level: 10,", "{c-level: 10,"))
    assert msg.startswith("icp.yaml:22: seniority points: unknown key 'c-level'")
    assert "did you mean 'c_level'?" in msg
    assert "valid keys: c_level, vp, director, manager, individual" in msg


def test_unknown_department_suggests() -> None:
    msg = error(replace_line("revenue_ops: 10", "revops: 10"))
    assert msg.startswith("icp.yaml:25: department points: unknown key 'revops'")
    assert "did you mean 'revenue_ops'?" in msg


def test_grades_must_be_ordered() -> None:
    msg = error(replace_line("{A: 70, B: 50, C: 30}", "{A: 70, B: 50, C: 60}"))
    assert msg.startswith("icp.yaml:1: grades: C (60) must be below B (50); order the thresholds A > B > C")


def test_grades_need_a_b_and_c() -> None:
    msg = error(replace_line("{A: 70, B: 50, C: 30}", "{A: 70, B: 50}"))
    assert msg.startswith("icp.yaml:1: grades: missing required key 'C'")
    msg = error(replace_line("{A: 70, B: 50, C: 30}", "{A: 70, B: 50, C: 30, D: 10}"))
    assert msg.startswith("icp.yaml:1: grades: unknown key 'D'")


def test_grade_over_100() -> None:
    msg = error(replace_line("{A: 70,", "{A: 170,"))
    assert msg.startswith("icp.yaml:1: grades: 'A' must be at most 100, got 170")


def test_grades_required() -> None:
    msg = error(SMALL.replace("grades: {A: 70, B: 50, C: 30}\n", ""))
    assert msg.startswith(
        "icp.yaml:1: top level: missing required key 'grades'; add 'grades: {A: 70, B: 50, C: 30}'"
    )


@pytest.mark.parametrize(
    ("value", "problem"), [("0", "must be greater than 0"), ("1.5", "must be at most 1")]
)
def test_min_known_range(value: str, problem: str) -> None:
    msg = error(replace_line("min_known: 0.4", f"min_known: {value}"))
    assert msg.startswith(f"icp.yaml:2: top level: 'min_known' {problem}")


def test_uk_is_not_an_iso_code() -> None:
    msg = error(replace_line("[US, gb, NO]", "[US, UK]"))
    assert msg.startswith("icp.yaml:19: country match #1: 'UK' is not an ISO 3166 alpha-2 code")
    assert "did you mean 'GB'?" in msg


def test_country_must_be_two_letters() -> None:
    msg = error(replace_line("[US, gb, NO]", "[USA]"))
    assert msg.startswith("icp.yaml:19: country match #1: 'USA' is not an ISO 3166 alpha-2 code")
    assert "two-letter codes" in msg


def test_value_listed_twice_names_both_lines() -> None:
    msg = error(replace_line("[financial services]", "[financial services, SaaS]"))
    assert msg.startswith("icp.yaml:7: industry match #2: 'saas' is listed twice (also at line 6)")


def test_match_entry_needs_points_and_values() -> None:
    msg = error(replace_line("{points: 20, values: [financial services]}", "{values: [financial services]}"))
    assert msg.startswith("icp.yaml:7: industry match #2: missing required key 'points'")
    msg = error(replace_line("{points: 20, values: [financial services]}", "{points: 20, vaules: [x]}"))
    assert "unknown key 'vaules'" in msg and "did you mean 'values'?" in msg


def test_overlapping_bands() -> None:
    msg = error(replace_line("{min: 1000, points: 15}", "{min: 900, points: 15}"))
    assert msg.startswith("icp.yaml:15: employees band #3: band 900+ overlaps band 50-999 (line 14)")


def test_band_max_below_min() -> None:
    msg = error(replace_line("{min: 50, max: 999, points: 30}", "{min: 999, max: 50, points: 30}"))
    assert msg.startswith("icp.yaml:14: employees band #2: 'max' 50 is below 'min' 999")


def test_band_bound_with_thousands_comma() -> None:
    msg = error(replace_line("{min: 1000, points: 15}", "{min: '1,000', points: 15}"))
    assert msg.startswith("icp.yaml:15: employees band #3: 'min' must be a whole number, got text '1,000'")
    assert "without thousands commas" in msg


def test_band_needs_a_bound() -> None:
    msg = error(replace_line("{max: 49, points: 0}", "{points: 0}"))
    assert msg.startswith("icp.yaml:13: employees band #1: needs 'min' or 'max'")


def test_criterion_that_can_never_give_points() -> None:
    msg = error(replace_line("{c_level: 10, vp: 10, director: 8, manager: 5}", "{c_level: 0, vp: -1}"))
    assert msg.startswith("icp.yaml:20: seniority: can never give points (highest is 0)")


def test_points_must_be_numbers() -> None:
    msg = error(replace_line("sales: 10,", "sales: lots,"))
    assert msg.startswith("icp.yaml:25: department points: 'sales' must be a number, got text 'lots'")


def test_empty_points_mapping() -> None:
    msg = error(replace_line("{sales: 10, revenue_ops: 10, marketing: 6}", "{}"))
    assert msg.startswith("icp.yaml:25: department points: is empty")


def test_file_level_errors() -> None:
    assert error("").startswith("icp.yaml:1: file: is empty")
    assert error("- a\n").startswith("icp.yaml:1: file: must be a mapping, got a list")
    assert "YAML syntax" in error("grades: {A: 70\n")
    with pytest.raises(IcpConfigError, match="must be handed in as text"):
        load_icp_config(b"grades: {}", "icp.yaml")  # type: ignore[arg-type]


def test_direct_construction_validates() -> None:
    country = ListCriterion(description="d", choices=(ListChoice(points=1, values=("US",)),))
    with pytest.raises(IcpConfigError, match="A > B > C"):
        IcpConfig(grades={"A": 50, "B": 60, "C": 10}, country=country)
    with pytest.raises(IcpConfigError, match="at least one criterion"):
        IcpConfig(grades={"A": 70, "B": 50, "C": 30})
    with pytest.raises(IcpConfigError, match="min_known"):
        IcpConfig(grades={"A": 70, "B": 50, "C": 30}, min_known=0, country=country)
    zero = ListCriterion(description="d", choices=(ListChoice(points=0, values=("US",)),))
    with pytest.raises(IcpConfigError, match="never give points"):
        IcpConfig(grades={"A": 70, "B": 50, "C": 30}, country=zero)
