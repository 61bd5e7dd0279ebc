"""Test cases beside scoring.yaml and icp.yaml: loading (file:line errors) and running."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring import load_icp_config, load_scoring_config
from scoring.cases import (
    CaseFileError,
    load_icp_cases,
    load_scoring_cases,
    run_icp_cases,
    run_scoring_cases,
)

ROOT = Path(__file__).resolve().parents[3] / "scoring"
CONFIG = load_scoring_config((ROOT / "scoring.yaml").read_text(encoding="utf-8"), "scoring.yaml")
ICP = load_icp_config((ROOT / "icp.yaml").read_text(encoding="utf-8"), "icp.yaml")


def test_the_shipped_cases_pass() -> None:
    scoring = run_scoring_cases(CONFIG, load_scoring_cases((ROOT / "scoring_test.yaml").read_text(), "t.yaml", CONFIG))
    icp = run_icp_cases(ICP, load_icp_cases((ROOT / "icp_test.yaml").read_text(), "i.yaml"))
    assert scoring and icp and all(r.passed for r in scoring + icp), [r.message for r in scoring + icp]


def test_a_failing_case_says_what_was_expected_and_what_happened() -> None:
    text = "- name: pricing\n  events:\n    - {type: page_view, url: 'https://x.test/pricing'}\n" \
           "  expect: {points: 12, reasons: [pricing-page], hand_raiser: true, sales_ready: true}\n"
    [result] = run_scoring_cases(CONFIG, load_scoring_cases(text, "t.yaml", CONFIG))
    assert not result.passed
    assert result.message == ("line 1 'pricing': expected points 12; reasons [pricing-page]; hand_raiser true; "
                              "sales_ready true, got 11 points from [page-view, pricing-page], hand_raiser false, "
                              "sales_ready false")


def test_days_are_capped_separately_and_repeat_counts() -> None:
    text = """
- name: two days of pricing
  events:
    - {type: page_view, url: 'https://x.test/pricing', repeat: 4, at: '2026-03-28T23:00:00+00:00'}
    - {type: page_view, url: 'https://x.test/pricing', repeat: 4, at: '2026-03-29T01:30:00+02:00'}
  expect: {points: 68}
"""
    # 2026-03-29T01:30+02:00 is 23:30 UTC on the 28th: the same UTC day, so one set of caps.
    [result] = run_scoring_cases(CONFIG, load_scoring_cases(text, "t.yaml", CONFIG))
    assert not result.passed and "got 38 points" in result.message
    [result] = run_scoring_cases(CONFIG, load_scoring_cases(text.replace("01:30:00+02:00", "01:30:00+00:00"),
                                                            "t.yaml", CONFIG))
    assert result.passed, result.message  # two UTC days: each has its own caps


@pytest.mark.parametrize(("text", "message"), [
    ("[]", "t.yaml:1: file: must be a non-empty list of cases"),
    ("- name: a\n  events: [{type: page_veiw}]\n  expect: {points: 1}\n",
     "t.yaml:2: case 'a' event #1: unknown event type 'page_veiw'; did you mean 'page_view'?"),
    ("- name: a\n  events: [{type: track}]\n  expect: {reasons: [pricing-pgae]}\n",
     "t.yaml:3: case 'a': 'reasons' names rule 'pricing-pgae', which the scoring file does not have; "
     "did you mean 'pricing-page'?"),
    ("- name: a\n  events: [{type: track, at: tomorrow}]\n  expect: {points: 1}\n",
     "'at' 'tomorrow' is not an ISO 8601 time with an offset"),
    ("- name: a\n  events: [{type: track}]\n  expect: {}\n", "'expect' is empty"),
    ("- name: a\n  events: [{type: track}]\n  expect: {points: 1}\n- name: a\n  events: [{type: track}]\n"
     "  expect: {points: 1}\n", "t.yaml:4: case 'a': duplicate case name (also at line 1)"),
    ("- name: a\n  events: [{type: track, repeat: 5000}]\n  expect: {points: 1}\n", "'repeat' 5000 is more than"),
])
def test_bad_case_files_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(CaseFileError) as info:
        load_scoring_cases(text, "t.yaml", CONFIG)
    assert message in str(info.value), str(info.value)


def test_icp_cases_errors_and_failures() -> None:
    with pytest.raises(CaseFileError, match=r"i.yaml:2: case 'a': unknown key 'titel'"):
        load_icp_cases("- name: a\n  lead: {titel: CEO}\n  expect: {grade: A}\n", "i.yaml")
    with pytest.raises(CaseFileError, match=r"'missing' names 'size', not a criterion"):
        load_icp_cases("- name: a\n  lead: {job_title: CEO}\n  expect: {missing: [size]}\n", "i.yaml")
    [result] = run_icp_cases(ICP, load_icp_cases("- name: a\n  lead: {job_title: CEO}\n  expect: {grade: A}\n",
                                                 "i.yaml"))
    assert not result.passed and result.message.startswith("line 1 'a': expected grade A, got grade ?")
