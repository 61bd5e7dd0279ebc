"""Lead-to-account matching: name normalisation, domain and website matching, the file, owner first."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from models import LeadView, Stage
from rules import RulesError, load_routing
from rules.accounts import (
    OWNER_RULE,
    AccountBook,
    MatchKind,
    accounts_yaml,
    check_owners,
    load_accounts,
    match_account,
    maven_accounts,
    normalise_company,
    normalise_domain,
    owner_first,
    pick_owners,
    slugify,
)

REPO = Path(__file__).resolve().parents[3]
SHIPPED_ACCOUNTS = REPO / "rules" / "accounts.yaml"
SHIPPED_ROUTING = REPO / "rules" / "routing.yaml"
DATASETS = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Acme Corporation", "acme"),
        ("ACME Corp.", "acme"),
        ("Acme, Inc.", "acme"),
        ("acme inc", "acme"),
        ("Acme LLC", "acme"),
        ("Acme L.L.C.", "acme"),
        ("Acme Ltd", "acme"),
        ("Acme Co Ltd", "acme"),
        ("Acme GmbH", "acme"),
        ("Acme plc", "acme"),
        ("Acme S.A.", "acme"),
        ("Acme AG", "acme"),
        ("  Acme   Corporation  ", "acme"),
        ("Gekko & Co", "gekko"),
        ("Gekko and Co.", "gekko"),
        ("Procter & Gamble Co.", "procter and gamble"),
        ("Société Générale S.A.", "societe generale"),
        ("McDonald's Corporation", "mcdonalds"),
        ("Green-Plus", "green plus"),
        ("Genco Pura Olive Oil Company", "genco pura olive oil"),
        ("The New York Inquirer", "the new york inquirer"),
        ("Co", "co"),  # the only word is never stripped
        ("Inc.", "inc"),
        ("Incorporated Widgets", "incorporated widgets"),  # suffixes go from the end only
        ("!!!", ""),
    ],
)
def test_company_names_normalise(raw: str, normal: str) -> None:
    assert normalise_company(raw) == normal


@pytest.mark.parametrize(
    ("raw", "domain"),
    [
        ("acme.com", "acme.com"),
        ("ACME.COM.", "acme.com"),
        ("www.acme.com", "acme.com"),
        ("https://www.Acme.com/about?x=1", "acme.com"),
        ("http://acme.co.uk:8080", "acme.co.uk"),
        ("//eu.acme.com/path", "eu.acme.com"),
        ("not a domain", None),
        ("", None),
        ("localhost", None),
    ],
)
def test_domains_normalise(raw: str, domain: str | None) -> None:
    assert normalise_domain(raw) == domain


def test_slugify_matches_the_routing_file_rep_ids() -> None:
    assert slugify("Violet Mclelland") == "violet-mclelland"
    assert slugify("Mei-Mei Johns") == "mei-mei-johns"
    routing = load_routing(SHIPPED_ROUTING.read_text(encoding="utf-8"), str(SHIPPED_ROUTING))
    assert all(slugify(rep.name) == rep.rep_id for rep in routing.reps)


BOOK_TEXT = textwrap.dedent("""\
    version: "t1"
    accounts:
      - {name: Acme Corporation, owner: violet-mclelland, domains: [acme.com, acme.co.uk], website: "https://www.acme-group.com"}
      - {name: "Gekko & Co", owner: donn-cantrell}
      - {name: Initech, owner: nobody-here, domains: [initech.io]}
      - {name: Ownerless Ltd}
      - {name: Bluth Company, owner: cassey-cress, subsidiary_of: Acme Corporation}
""")

ROUTING = load_routing(textwrap.dedent("""\
    version: "r1"
    teams:
      east:
        description: East office
        manager: Cara Losch
        reps:
          - {id: violet-mclelland, name: Violet Mclelland, email: violet.mclelland@example.com}
          - {id: donn-cantrell, name: Donn Cantrell, email: donn.cantrell@example.com}
      central:
        description: Central office
        manager: Dustin Brinkmann
        reps:
          - {id: cassey-cress, name: Cassey Cress, email: cassey.cress@example.com}
    rules:
      - {name: default, description: everything, when: always, team: central}
"""), "r.yaml")


@pytest.fixture
def book() -> AccountBook:
    return load_accounts(BOOK_TEXT, "accounts.yaml")


def test_email_domain_matches_first_and_sub_domains_count(book: AccountBook) -> None:
    m = match_account({"email": "jane@eu.acme.com", "company": "Gekko & Co"}, book)
    assert m is not None
    assert (m.account.name, m.by, m.value) == ("Acme Corporation", MatchKind.EMAIL_DOMAIN, "acme.com")
    m2 = match_account({"email_domain": "ACME.CO.UK"}, book)
    assert m2 is not None and m2.by is MatchKind.EMAIL_DOMAIN and m2.value == "acme.co.uk"


def test_website_domain_matches_and_the_account_website_counts_as_a_domain(book: AccountBook) -> None:
    m = match_account({"website": "http://www.initech.io/contact"}, book)
    assert m is not None and (m.account.name, m.by) == ("Initech", MatchKind.WEBSITE)
    by_site = match_account({"email": "bob@acme-group.com"}, book)
    assert by_site is not None and by_site.account.name == "Acme Corporation"


def test_free_mail_never_matches_and_company_name_is_the_fallback(book: AccountBook) -> None:
    m = match_account({"email": "gekko.fan@gmail.com", "company": "GEKKO and Co., Ltd."}, book)
    assert m is not None
    assert (m.account.name, m.by, m.value) == ("Gekko & Co", MatchKind.COMPANY_NAME, "gekko")
    assert "company name 'gekko'" in m.explanation


def test_no_match(book: AccountBook) -> None:
    assert match_account({"email": "x@unknown.org", "company": "Unknown Widgets"}, book) is None
    assert match_account({}, book) is None
    assert match_account({"company": "   "}, book) is None
    assert match_account({"email": "x@com"}, book) is None  # a bare TLD is never an account domain


def test_a_lead_view_matches_by_its_email_and_fields(book: AccountBook) -> None:
    lead = LeadView(lead_id="L1", email="pat@acme.com", score=10.0, stage=Stage.KNOWN, fields={"company": "Other"})
    m = match_account(lead, book)
    assert m is not None and m.by is MatchKind.EMAIL_DOMAIN


def test_owner_first_routes_to_an_available_owner(book: AccountBook) -> None:
    route = owner_first(match_account({"company": "Acme Corp"}, book), ROUTING)
    assert route.routed and route.rep is not None and route.rep.rep_id == "violet-mclelland"
    assert route.decision is not None
    assert (route.decision.team, route.decision.rule, route.decision.rules_version) == ("east", OWNER_RULE, "r1")
    assert route.decision.path == (f"{OWNER_RULE}:yes",)
    assert "owned by Violet Mclelland" in route.reason


def test_owner_first_falls_back_when_the_owner_cannot_take_it(book: AccountBook) -> None:
    acme = match_account({"company": "Acme"}, book)
    busy = owner_first(acme, ROUTING, available={"donn-cantrell"})
    assert not busy.routed and busy.decision is None and "not available" in busy.reason
    assert owner_first(acme, ROUTING, available=lambda rep_id: rep_id == "violet-mclelland").routed
    missing = owner_first(match_account({"company": "Initech"}, book), ROUTING)
    assert not missing.routed and "not in the routing roster" in missing.reason
    ownerless = owner_first(match_account({"company": "Ownerless"}, book), ROUTING)
    assert not ownerless.routed and "has no owner" in ownerless.reason
    nothing = owner_first(None, ROUTING)
    assert not nothing.routed and nothing.reason == "no account matched"


def test_check_owners_names_the_file_line_and_the_fix(book: AccountBook) -> None:
    problems = check_owners(book, ROUTING)
    assert len(problems) == 1
    assert problems[0].startswith("accounts.yaml:5: account 'Initech': owner 'nobody-here' is not a rep in r.yaml")


def test_bad_accounts_files_list_every_problem() -> None:
    text = textwrap.dedent("""\
        accounts:
          - {name: Acme Corporation, domains: [acme.com], employees: lots}
          - {name: ACME Corp., owner: Violet Mclelland}
          - {name: Other, domains: [gmail.com, "not a domain", acme.com], website: "???"}
          - {name: Child, subsidiary_of: Nowhere Inc}
          - {name: Colourful, colour: blue}
          - {owner: x}
    """)
    with pytest.raises(RulesError) as info:
        load_accounts(text, "bad.yaml")
    problems = "\n".join(info.value.problems)
    assert "bad.yaml:2: account 'Acme Corporation': employees must be a whole number" in problems
    assert "same company as 'Acme Corporation' at line 2" in problems
    assert "did you mean 'violet-mclelland'?" in problems
    assert "'gmail.com' is a free-mail provider" in problems
    assert "domain 'not a domain' is not a domain name" in problems
    assert "domain 'acme.com' already belongs to account 'Acme Corporation'" in problems
    assert "website '???' has no domain name" in problems
    assert "unknown key 'colour'" in problems
    assert "subsidiary_of 'Nowhere Inc' is not an account in this file" in problems
    assert "missing required key 'name'" in problems


def test_generated_yaml_reads_back() -> None:
    accounts_csv = "account,sector,year_established,revenue,employees,office_location,subsidiary_of\n" \
                   "Acme Corporation,technolgy,1996,1100.04,2822,United States,\n" \
                   "Bluth Company,technolgy,1993,1242.32,3027,United States,Acme Corporation\n"
    pipeline_csv = "opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_date,close_value\n" \
                   "1,Reed Clapper,GTX,Acme Corporation,Won,2017-01-01,2017-02-01,100\n" \
                   "2,Violet Mclelland,GTX,Acme Corporation,Won,2017-01-01,2017-02-01,900\n" \
                   "3,Violet Mclelland,GTX,Bluth Company,Lost,2017-01-01,2017-02-01,0\n"
    accounts, picks = maven_accounts(accounts_csv, pipeline_csv)
    assert picks["Acme Corporation"].rep_name == "Violet Mclelland"  # tie on deals and wins, more won value
    assert picks["Acme Corporation"].tie_break == "more won value"
    book = load_accounts(accounts_yaml(accounts, "v", "header", picks), "gen.yaml")
    acme = book.get("acme corp")
    assert acme is not None and acme.owner == "violet-mclelland" and acme.employees == 2822
    bluth = book.get("Bluth Company")
    assert bluth is not None and bluth.subsidiary_of == "Acme Corporation" and bluth.domains == ()


def test_pick_owners_most_deals_wins_ties_are_deterministic() -> None:
    rows = [{"account": "A", "sales_agent": name, "deal_stage": "Lost", "close_value": "0"}
            for name in ("Zed", "Amy", "Zed", "Amy")]
    assert pick_owners(rows)["A"].rep_name == "Amy"
    assert pick_owners(reversed(rows))["A"].tie_break == "name order"
    rows.append({"account": "A", "sales_agent": "Zed", "deal_stage": "Engaging", "close_value": ""})
    assert pick_owners(rows)["A"].rep_name == "Zed"


def test_the_shipped_accounts_file_loads_and_every_owner_is_a_rep() -> None:
    book = load_accounts(SHIPPED_ACCOUNTS.read_text(encoding="utf-8"), str(SHIPPED_ACCOUNTS))
    routing = load_routing(SHIPPED_ROUTING.read_text(encoding="utf-8"), str(SHIPPED_ROUTING))
    assert len(book) == 85
    assert check_owners(book, routing) == []
    assert all(a.owner and not a.domains and a.website is None for a in book.accounts)


def test_the_shipped_accounts_file_is_what_the_maven_data_gives() -> None:
    if not DATASETS.is_dir():
        pytest.skip(f"the shared datasets folder {DATASETS} is absent on this machine")
    accounts, _ = maven_accounts((DATASETS / "maven_crm_accounts.csv").read_text(encoding="utf-8"),
                                 (DATASETS / "maven_crm_sales_pipeline.csv").read_text(encoding="utf-8"))
    shipped = load_accounts(SHIPPED_ACCOUNTS.read_text(encoding="utf-8"), str(SHIPPED_ACCOUNTS))
    assert [(a.name, a.owner, a.employees, a.sector) for a in accounts] == [
        (a.name, a.owner, a.employees, a.sector) for a in shipped.accounts
    ]
