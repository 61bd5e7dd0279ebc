"""Lead-to-account matching: which known customer account a lead belongs to.

Pure logic: callers hand in the accounts file's text (``accounts.yaml``) and a
lead's facts; nothing here reads files or talks to Redis.

A lead matches an account, in this order of confidence:

1. ``email_domain`` (or the domain of ``email``) is one of the account's
   ``domains`` or its website's domain, or a sub-domain of one
   (``eu.acme.com`` matches ``acme.com``).  Free-mail domains (gmail.com, ...)
   never match.
2. the lead's ``website`` field has one of those domains.
3. the lead's ``company`` equals the account's name once both are normalised
   by :func:`normalise_company`: lower-case, accents and punctuation dropped,
   legal suffixes (Inc, LLC, Ltd, GmbH, Corp, Corporation, Co, plc, SA, AG, ...)
   removed from the end, whitespace collapsed.

:func:`match_account` says how it matched; :func:`owner_first` decides whether
the lead goes straight to the account's owner (when that rep is in the routing
roster and available) before the routing rules are consulted.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from models import LeadView, Rep, RoutingDecision
from rules._problems import ProblemLog, suggest
from rules._yaml import YList, YMap, parse
from rules.catalogue import domain_of
from rules.engine import RoutingConfig, check_keys, required_str
from rules.errors import DuplicateNameError, RuleSyntaxError, RuleTypeError

TOP_KEYS = ("version", "accounts")
ACCOUNT_KEYS = (
    "name",
    "domains",
    "website",
    "owner",
    "sector",
    "employees",
    "revenue",
    "year_established",
    "office_location",
    "subsidiary_of",
)

# The rule name an owner-first decision records (RoutingDecision.rule).
OWNER_RULE = "account-owner"

# Legal-form words removed from the end of a company name, after punctuation is gone
# ("S.A." -> "sa", "L.L.C." -> "llc").  Only trailing words go, and never the last word left.
LEGAL_SUFFIXES: frozenset[str] = frozenset(
    """
    inc incorporated llc llp lp ltd limited gmbh corp corporation co company plc sa ag
    nv bv pty srl spa sas sarl ab oy as kg ltda kk
    """.split()
)

# Personal mailboxes: their domain says nothing about the lead's company.
FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    """
    gmail.com googlemail.com yahoo.com yahoo.co.uk ymail.com hotmail.com hotmail.co.uk outlook.com live.com
    msn.com icloud.com me.com mac.com aol.com proton.me protonmail.com gmx.com gmx.de gmx.net web.de
    mail.com mail.ru yandex.ru yandex.com qq.com 163.com 126.com uol.com.br bol.com.br zoho.com fastmail.com
    """.split()
)

_OWNER_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
_DROP = re.compile(r"[.'\u2019`]")  # dropped without a gap: S.A. -> SA, O'Brien -> OBrien
_AND = re.compile(r"\s*[&+]\s*")
_NON_WORD = re.compile(r"[^0-9a-z]+")


# --- normalisation -------------------------------------------------------------------------------


def normalise_company(name: str) -> str:
    """The form company names are compared in: ``"Acme, Inc."`` and ``"ACME Corp"`` both give ``"acme"``.

    Lower-case; accents folded (é -> e); ``.`` and apostrophes dropped; ``&``
    and ``+`` read as ``and``; any other punctuation becomes a space; legal
    suffixes (and an ``and`` left dangling, as in ``"Gekko & Co"``) removed from
    the end, but never the only word left, so ``"Co"`` stays ``"co"``;
    whitespace collapsed.
    """
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = _AND.sub(" and ", _DROP.sub("", text))
    words = _NON_WORD.sub(" ", text).split()
    while len(words) > 1 and (words[-1] in LEGAL_SUFFIXES or words[-1] == "and"):
        words.pop()
    return " ".join(words)


def normalise_domain(value: str) -> str | None:
    """A host name from a domain, website or URL, lower-case, without ``www.``; None when there is none.

    ``"https://www.Acme.com/about"``, ``"acme.com."`` and ``"WWW.ACME.COM"`` all give ``"acme.com"``.
    """
    text = value.strip().lower()
    if not text:
        return None
    if "://" in text:
        text = text.split("://", 1)[1]
    elif text.startswith("//"):
        text = text[2:]
    text = re.split(r"[/?#]", text, maxsplit=1)[0]
    text = text.rsplit("@", 1)[-1]  # user@host in a URL
    text = text.split(":", 1)[0].strip(".")
    if text.startswith("www."):
        text = text[4:]
    return text if _DOMAIN.match(text) else None


def slugify(name: str) -> str:
    """A rep id from a person's name, as the routing file writes them: ``"Mei-Mei Johns"`` -> ``"mei-mei-johns"``."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


# --- the accounts file ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """A customer account and who owns it."""

    name: str
    owner: str | None = None
    domains: tuple[str, ...] = ()
    website: str | None = None
    sector: str | None = None
    employees: int | None = None
    revenue: float | None = None
    year_established: int | None = None
    office_location: str | None = None
    subsidiary_of: str | None = None
    line: int = 0

    @property
    def key(self) -> str:
        """The normalised name (see :func:`normalise_company`)."""
        return normalise_company(self.name)

    @property
    def all_domains(self) -> tuple[str, ...]:
        """``domains`` plus the website's domain, without repeats."""
        site = normalise_domain(self.website) if self.website else None
        return tuple(dict.fromkeys([*self.domains, *([site] if site else [])]))


@dataclass(frozen=True)
class AccountBook:
    """A loaded, checked accounts file, indexed for matching.  Build it with :func:`load_accounts`."""

    version: str
    source: str
    accounts: tuple[Account, ...]
    _by_domain: Mapping[str, Account] = field(init=False, repr=False, compare=False)
    _by_name: Mapping[str, Account] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_domain: dict[str, Account] = {}
        by_name: dict[str, Account] = {}
        for account in self.accounts:
            for domain in account.all_domains:
                by_domain.setdefault(domain, account)
            by_name.setdefault(account.key, account)
        object.__setattr__(self, "_by_domain", MappingProxyType(by_domain))
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))

    def __len__(self) -> int:
        return len(self.accounts)

    def by_domain(self, domain: str) -> tuple[Account, str] | None:
        """The account owning ``domain`` or a parent domain of it, and the domain that matched."""
        labels = domain.lower().strip(".").split(".")
        for start in range(len(labels) - 1):  # never the bare top-level domain
            candidate = ".".join(labels[start:])
            account = self._by_domain.get(candidate)
            if account is not None:
                return account, candidate
        return None

    def by_company(self, company: str) -> Account | None:
        key = normalise_company(company)
        return self._by_name.get(key) if key else None

    def get(self, name: str) -> Account | None:
        """The account called ``name`` (compared normalised)."""
        return self.by_company(name)


def load_accounts(text: str, source: str = "<string>") -> AccountBook:
    """Parse and check an accounts file; raise one :class:`~rules.errors.RulesError` listing every problem."""
    log = ProblemLog(source)
    parsed, doc = parse(text, log)
    if not parsed:
        log.raise_if_any()
    if not isinstance(doc, YMap):
        log.add(RuleSyntaxError, getattr(doc, "line", 1), None,
                "expected a mapping with keys version and accounts; see rules/accounts.yaml for the shape")
        log.raise_if_any()
        raise AssertionError("unreachable")
    check_keys(doc, TOP_KEYS, None, log, required=("accounts",))
    version = ""
    if "version" in doc:
        raw = doc["version"]
        if isinstance(raw, str) and raw.strip():
            version = raw.strip()
        else:
            log.add(RuleSyntaxError, doc.line_of("version"), None,
                    f"version must be a non-empty string, got {raw!r}; quote it, e.g. version: \"2026-11-22.1\"")
    accounts = _accounts(doc, log) if "accounts" in doc else []
    log.raise_if_any()
    return AccountBook(version=version, source=source, accounts=tuple(accounts))


def _accounts(doc: YMap, log: ProblemLog) -> list[Account]:
    node = doc["accounts"]
    if not isinstance(node, YList):
        log.add(RuleSyntaxError, doc.line_of("accounts"), None,
                "accounts must be a list, e.g. - {name: Acme Corporation, owner: jane-doe, domains: [acme.com]}")
        return []
    out: list[Account] = []
    names: dict[str, tuple[str, int]] = {}
    domains: dict[str, tuple[str, int]] = {}
    for index, anode in enumerate(node):
        line = node.line_of(index)
        if not isinstance(anode, YMap):
            log.add(RuleSyntaxError, line, f"account #{index + 1}",
                    "an account must be a mapping, e.g. {name: Acme Corporation, owner: jane-doe}")
            continue
        raw_name = anode.get("name")
        context = f"account {raw_name!r}" if isinstance(raw_name, str) and raw_name.strip() else f"account #{index + 1}"
        before = len(log)
        check_keys(anode, ACCOUNT_KEYS, context, log, required=("name",), line=line)
        name = required_str(anode, "name", context, log)
        if name is not None:
            key = normalise_company(name)
            if not key:
                log.add(RuleSyntaxError, anode.line_of("name"), context,
                        f"name {name!r} has no letters or digits left once normalised; give the company's name")
            elif key in names:
                other, other_line = names[key]
                log.add(DuplicateNameError, anode.line_of("name"), context,
                        f"name {name!r} is the same company as {other!r} at line {other_line} once normalised "
                        f"(both are {key!r}); merge the two accounts")
            else:
                names[key] = (name, anode.line_of("name"))
        owner = _optional_str(anode, "owner", context, log)
        if owner is not None and not _OWNER_ID.match(owner):
            log.add(RuleSyntaxError, anode.line_of("owner"), context,
                    f"owner {owner!r} must be a rep id from the routing file; did you mean {slugify(owner)!r}?")
        account_domains = _domains(anode, context, log)
        website = _optional_str(anode, "website", context, log)
        if website is not None and normalise_domain(website) is None:
            log.add(RuleSyntaxError, anode.line_of("website"), context,
                    f"website {website!r} has no domain name in it; write it like https://www.acme.com or leave it \"\"")
        site = normalise_domain(website) if website else None
        for domain in dict.fromkeys([*account_domains, *([site] if site else [])]):
            where = anode.line_of("domains") if domain in account_domains else anode.line_of("website")
            if domain in domains and domains[domain][0] != name:
                other, other_line = domains[domain]
                log.add(DuplicateNameError, where, context,
                        f"domain {domain!r} already belongs to account {other!r} (line {other_line}); "
                        "a domain can identify one account only")
            else:
                domains[domain] = (name or "", where)
        employees = _number(anode, "employees", context, log, integer=True)
        revenue = _number(anode, "revenue", context, log, integer=False)
        year = _number(anode, "year_established", context, log, integer=True)
        if len(log) == before and name is not None:
            out.append(Account(
                name=name,
                owner=owner,
                domains=account_domains,
                website=website,
                sector=_optional_str(anode, "sector", context, log),
                employees=int(employees) if employees is not None else None,
                revenue=revenue,
                year_established=int(year) if year is not None else None,
                office_location=_optional_str(anode, "office_location", context, log),
                subsidiary_of=_optional_str(anode, "subsidiary_of", context, log),
                line=line,
            ))
    keys = {a.key for a in out}
    for account in out:
        if account.subsidiary_of is not None and normalise_company(account.subsidiary_of) not in keys:
            log.add(RuleSyntaxError, account.line, f"account {account.name!r}",
                    f"subsidiary_of {account.subsidiary_of!r} is not an account in this file; "
                    f"{suggest(account.subsidiary_of, [a.name for a in out])}")
    return out


def _optional_str(node: YMap, key: str, context: str, log: ProblemLog) -> str | None:
    value = node.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "sector":
        return str(value)
    log.add(RuleTypeError, node.line_of(key), context, f"{key} must be a string, got {value!r}; quote it: \"{value}\"")
    return None


def _domains(node: YMap, context: str, log: ProblemLog) -> tuple[str, ...]:
    value = node.get("domains")
    if value is None or value == "":
        return ()
    items: list[object] = list(value) if isinstance(value, YList) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            log.add(RuleTypeError, node.line_of("domains"), context,
                    f"domain {item!r} must be a string such as acme.com")
            continue
        domain = normalise_domain(item)
        if domain is None:
            log.add(RuleSyntaxError, node.line_of("domains"), context,
                    f"domain {item!r} is not a domain name; write it like acme.com")
        elif domain in FREE_MAIL_DOMAINS:
            log.add(RuleSyntaxError, node.line_of("domains"), context,
                    f"domain {domain!r} is a free-mail provider, so it would claim every lead using it; remove it")
        elif domain not in out:
            out.append(domain)
    return tuple(out)


def _number(node: YMap, key: str, context: str, log: ProblemLog, *, integer: bool) -> float | None:
    value = node.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        kind = "a whole number" if integer else "a number"
        log.add(RuleTypeError, node.line_of(key), context,
                f"{key} must be {kind} of zero or more, got {value!r}; write it without quotes, e.g. {key}: 120")
        return None
    if integer and value != int(value):
        log.add(RuleTypeError, node.line_of(key), context, f"{key} must be a whole number, got {value!r}")
        return None
    return float(value)


def check_owners(book: AccountBook, routing: RoutingConfig) -> list[str]:
    """One line per account whose owner is not a rep in ``routing`` (file:line: account: problem; fix)."""
    reps = {rep.rep_id for rep in routing.reps}
    problems: list[str] = []
    for account in book.accounts:
        if account.owner is not None and account.owner not in reps:
            problems.append(f"{book.source}:{account.line}: account {account.name!r}: owner {account.owner!r} is not "
                            f"a rep in {routing.source}; {suggest(account.owner, reps)}")
    return problems


# --- matching ------------------------------------------------------------------------------------


class MatchKind(StrEnum):
    EMAIL_DOMAIN = "email_domain"
    WEBSITE = "website"
    COMPANY_NAME = "company_name"


@dataclass(frozen=True, slots=True)
class AccountMatch:
    """The account a lead belongs to, and how that was decided."""

    account: Account
    by: MatchKind
    value: str  # what matched: the domain, or the normalised company name

    @property
    def explanation(self) -> str:
        if self.by is MatchKind.COMPANY_NAME:
            return f"company name {self.value!r} is account {self.account.name!r}"
        what = "email domain" if self.by is MatchKind.EMAIL_DOMAIN else "website"
        return f"{what} {self.value} belongs to account {self.account.name!r}"


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def match_account(lead: Mapping[str, object] | LeadView, book: AccountBook) -> AccountMatch | None:
    """The account ``lead`` belongs to, or None.

    ``lead`` is a lead's facts (``email``, ``email_domain``, ``website``,
    ``company``; other keys are ignored) or a :class:`~models.LeadView`, whose
    email and ``fields`` are used.  Email domain beats website beats company name.
    """
    if isinstance(lead, LeadView):
        facts: dict[str, object] = dict(lead.fields)
        if lead.email:
            facts["email"] = lead.email
    else:
        facts = dict(lead)
    email_domain = _text(facts.get("email_domain"))
    if email_domain is None:
        email = _text(facts.get("email"))
        email_domain = domain_of(email) if email else None
    domain = normalise_domain(email_domain) if email_domain else None
    if domain and domain not in FREE_MAIL_DOMAINS:
        hit = book.by_domain(domain)
        if hit is not None:
            return AccountMatch(hit[0], MatchKind.EMAIL_DOMAIN, hit[1])
    website = _text(facts.get("website"))
    site = normalise_domain(website) if website else None
    if site and site not in FREE_MAIL_DOMAINS:
        hit = book.by_domain(site)
        if hit is not None:
            return AccountMatch(hit[0], MatchKind.WEBSITE, hit[1])
    company = _text(facts.get("company"))
    if company:
        account = book.by_company(company)
        if account is not None:
            return AccountMatch(account, MatchKind.COMPANY_NAME, account.key)
    return None


# --- owner first ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnerRoute:
    """Whether a lead goes straight to its account's owner; ``reason`` says why or why not."""

    rep: Rep | None
    decision: RoutingDecision | None
    reason: str
    match: AccountMatch | None = None

    @property
    def routed(self) -> bool:
        return self.rep is not None


def owner_first(
    match: AccountMatch | None,
    routing: RoutingConfig,
    available: Collection[str] | Callable[[str], bool] | None = None,
) -> OwnerRoute:
    """Route to the matched account's owner when that rep is in ``routing``'s roster and available.

    ``available`` is the rep ids that can take a lead now (a collection), or a
    predicate on a rep id; None means every rep is available.  When the owner
    cannot take the lead, ``rep`` and ``decision`` are None and the caller
    routes by the rules as usual.  The decision names rule ``account-owner``
    and carries ``routing.version``.
    """
    if match is None:
        return OwnerRoute(None, None, "no account matched")
    account = match.account
    if account.owner is None:
        return OwnerRoute(None, None, f"account {account.name!r} has no owner", match)
    rep = next((r for r in routing.reps if r.rep_id == account.owner), None)
    if rep is None:
        return OwnerRoute(None, None, f"owner {account.owner!r} of account {account.name!r} is not in the routing "
                                      f"roster {routing.version!r}", match)
    is_free = True if available is None else (available(rep.rep_id) if callable(available) else rep.rep_id in available)
    if not is_free:
        return OwnerRoute(None, None, f"owner {rep.name} of account {account.name!r} is not available", match)
    decision = RoutingDecision(team=rep.team, rule=OWNER_RULE, rules_version=routing.version,
                               path=(f"{OWNER_RULE}:yes",))
    return OwnerRoute(rep, decision, f"{match.explanation}, owned by {rep.name}", match)


# --- building the file from the Maven CRM data ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnerPick:
    """Why a rep owns an account: their deal count and who they tied with."""

    rep_name: str
    deals: int
    won: int
    total_deals: int
    tied_with: tuple[str, ...] = ()
    tie_break: str = ""  # how the tie was broken: more won deals, more won value, or name order


def pick_owners(pipeline: Iterable[Mapping[str, str]]) -> dict[str, OwnerPick]:
    """Account name -> the sales agent with the most deals for it in the Maven pipeline rows.

    Ties go to the agent with more won deals, then more won value, then the
    alphabetically first name, so the result does not depend on row order.
    """
    deals: dict[str, Counter[str]] = defaultdict(Counter)
    won: dict[str, Counter[str]] = defaultdict(Counter)
    won_value: dict[str, Counter[str]] = defaultdict(Counter)
    for row in pipeline:
        account = (row.get("account") or "").strip()
        agent = (row.get("sales_agent") or "").strip()
        if not account or not agent:
            continue
        deals[account][agent] += 1
        if (row.get("deal_stage") or "").strip() == "Won":
            won[account][agent] += 1
            try:
                won_value[account][agent] += int(float(row.get("close_value") or 0))
            except ValueError:
                pass
    out: dict[str, OwnerPick] = {}
    for account, counts in deals.items():
        ranked = sorted(counts, key=lambda a: (-counts[a], -won[account][a], -won_value[account][a], a))
        best = ranked[0]
        tied = tuple(a for a in ranked[1:] if counts[a] == counts[best])
        tie_break = ""
        if tied:
            runner = tied[0]
            if won[account][best] != won[account][runner]:
                tie_break = "more won deals"
            elif won_value[account][best] != won_value[account][runner]:
                tie_break = "more won value"
            else:
                tie_break = "name order"
        out[account] = OwnerPick(best, counts[best], won[account][best], sum(counts.values()), tied, tie_break)
    return out


def maven_accounts(accounts_csv: str, pipeline_csv: str) -> tuple[list[Account], dict[str, OwnerPick]]:
    """Accounts from the Maven CRM ``accounts.csv`` text, owned per :func:`pick_owners` over ``sales_pipeline.csv``.

    The data has no domains or websites, so those stay empty.
    """
    picks = pick_owners(csv.DictReader(io.StringIO(pipeline_csv)))
    out: list[Account] = []
    for row in csv.DictReader(io.StringIO(accounts_csv)):
        name = (row.get("account") or "").strip()
        if not name:
            continue
        pick = picks.get(name)
        out.append(Account(
            name=name,
            owner=slugify(pick.rep_name) if pick else None,
            sector=(row.get("sector") or "").strip() or None,
            employees=_int_or_none(row.get("employees")),
            revenue=_float_or_none(row.get("revenue")),
            year_established=_int_or_none(row.get("year_established")),
            office_location=(row.get("office_location") or "").strip() or None,
            subsidiary_of=(row.get("subsidiary_of") or "").strip() or None,
        ))
    return out, picks


def _int_or_none(raw: str | None) -> int | None:
    value = _float_or_none(raw)
    return int(value) if value is not None else None


def _float_or_none(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def _q(value: str | None) -> str:
    return json.dumps(value or "", ensure_ascii=False)


def accounts_yaml(accounts: Sequence[Account], version: str, header: str = "",
                  picks: Mapping[str, OwnerPick] | None = None) -> str:
    """The text of an accounts file, one account per line, which :func:`load_accounts` reads back."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    lines += [f"version: {_q(version)}", "", "accounts:"]
    for a in accounts:
        parts = [
            f"name: {_q(a.name)}",
            f"owner: {a.owner or _q('')}",
            f"domains: [{', '.join(a.domains)}]",
            f"website: {_q(a.website)}",
            f"sector: {_q(a.sector)}",
            f"employees: {a.employees if a.employees is not None else _q('')}",
            f"revenue: {a.revenue if a.revenue is not None else _q('')}",
            f"year_established: {a.year_established if a.year_established is not None else _q('')}",
            f"office_location: {_q(a.office_location)}",
            f"subsidiary_of: {_q(a.subsidiary_of)}",
        ]
        pick = (picks or {}).get(a.name)
        if pick is not None:
            note = f"owner: {pick.deals} of {pick.total_deals} deals, {pick.won} won"
            if pick.tied_with:
                note += f"; tied on deals with {', '.join(pick.tied_with)}, picked by {pick.tie_break}"
            lines.append(f"  # {a.name}: {note}")
        lines.append("  - {" + ", ".join(parts) + "}")
    return "\n".join(lines) + "\n"
