"""Seniority and department from free-text job titles."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring import DEPARTMENTS, SENIORITIES, classify_title
from scoring.titles import normalise_title

TITLES: list[tuple[str, str | None, str | None]] = [
    # the examples the issue names
    ("VP Sales", "vp", "sales"),
    ("Head of RevOps", "director", "revenue_ops"),
    ("Chief Revenue Officer", "c_level", "sales"),
    ("CTO", "c_level", "engineering"),
    ("Sr. Data Engineer", "individual", "engineering"),
    ("Marketing Manager", "manager", "marketing"),
    # C-suite
    ("CEO", "c_level", None),
    ("Founder & CEO", "c_level", None),
    ("Co-Founder & CTO", "c_level", "engineering"),
    ("CFO", "c_level", "finance"),
    ("Chief Marketing Officer", "c_level", "marketing"),
    ("CIO", "c_level", "it"),
    ("CISO", "c_level", "it"),
    ("COO", "c_level", "operations"),
    ("Chief People Officer", "c_level", "hr"),
    ("Chief Product Officer", "c_level", "other"),
    ("President", "c_level", None),
    ("Managing Director", "c_level", None),
    ("Owner", "c_level", None),
    # VPs
    ("Vice President of Marketing", "vp", "marketing"),
    ("V.P., Engineering", "vp", "engineering"),
    ("SVP Global Sales", "vp", "sales"),
    ("Assistant Vice President, Finance", "vp", "finance"),
    ("EVP, Operations", "vp", "operations"),
    # directors and heads
    ("Director of Sales Operations", "director", "revenue_ops"),
    ("Director, Marketing Operations", "director", "revenue_ops"),
    ("IT Director", "director", "it"),
    ("Head of IT", "director", "it"),
    ("Head of Growth", "director", "marketing"),
    ("Head of People", "director", "hr"),
    ("Dir. Demand Gen", "director", "marketing"),
    ("Senior Director, Engineering", "director", "engineering"),
    ("Chief of Staff", "director", None),
    # managers
    ("Revenue Operations Manager", "manager", "revenue_ops"),
    ("I.T. Manager", "manager", "it"),
    ("Engineering Manager", "manager", "engineering"),
    ("Customer Success Manager", "manager", "other"),
    ("Product Marketing Manager", "manager", "marketing"),
    ("People Ops Manager", "manager", "hr"),
    ("Procurement Mgr", "manager", "finance"),
    ("Team Lead, Support", "manager", "other"),
    ("Operations Manager", "manager", "operations"),
    # individual contributors
    ("Senior Account Executive", "individual", "sales"),
    ("Key Account Manager", "individual", "sales"),
    ("Sales Development Representative", "individual", "sales"),
    ("SDR", "individual", "sales"),
    ("Solutions Engineer", "individual", "sales"),
    ("Salesforce Administrator", "individual", "revenue_ops"),
    ("Software Engineer", "individual", "engineering"),
    ("DevOps Engineer", "individual", "engineering"),
    ("Data Scientist", "individual", "engineering"),
    ("Network Administrator", "individual", "it"),
    ("Accountant", "individual", "finance"),
    ("Revenue Accountant", "individual", "finance"),
    ("HR Business Partner", "individual", "hr"),
    ("Talent Acquisition Specialist", "individual", "hr"),
    ("Content Writer", "individual", "marketing"),
    ("General Counsel", "individual", "other"),
    ("Product Owner", "individual", "other"),
    ("Executive Assistant to the CEO", "individual", None),
    ("Student", "individual", "other"),
    ("Marketing", "individual", "marketing"),
    # other languages, accents folded
    ("Président Directeur Général", "c_level", None),
    ("Geschäftsführer", "c_level", None),
    ("Leiter Vertrieb", "director", "sales"),
    ("Gerente de Ventas", "manager", "sales"),
    # nothing to read
    ("", None, None),
    ("n/a", None, None),
    ("-", None, None),
    ("asdf qwerty", None, None),
]


@pytest.mark.parametrize(("title", "seniority", "department"), TITLES)
def test_classify_title(title: str, seniority: str | None, department: str | None) -> None:
    assert classify_title(title) == (seniority, department)


def test_table_is_big_enough() -> None:
    assert len(TITLES) >= 25


def test_none_title() -> None:
    assert classify_title(None) == (None, None)


def test_case_and_punctuation_do_not_matter() -> None:
    assert classify_title("vp sales") == classify_title("VP, SALES") == classify_title("V.P. - Sales")


@pytest.mark.parametrize(
    ("title", "normalised"),
    [
        ("Sr. Data Engineer", "senior data engineer"),
        ("R&D Lead", "rnd lead"),
        ("V.P., Sales", "vp sales"),
        ("Co-Founder", "cofounder"),
        ("  Head   of\tRevOps ", "head of revops"),
        ("Directeur Général", "directeur general"),
    ],
)
def test_normalise_title(title: str, normalised: str) -> None:
    assert normalise_title(title) == normalised


@given(st.text(max_size=60))
def test_any_text_classifies_into_the_known_classes(title: str) -> None:
    seniority, department = classify_title(title)
    assert seniority is None or seniority in SENIORITIES
    assert department is None or department in DEPARTMENTS
    if department is not None:
        assert seniority is not None  # a title with a department is at least an individual
