"""Fit grade A-D from the ideal customer profile (``icp.yaml``).

Engagement says *how interested* a lead is; fit says *whether we want them*.
:func:`load_icp_config` parses and strictly validates ``icp.yaml`` (same
message style as ``scoring.yaml``: ``file:line: where: problem; fix`` with a
did-you-mean); :func:`fit_grade` grades one lead from its fields.

Format::

    grades: {A: 70, B: 50, C: 30}   # normalised fit (0-100) each letter needs; below C is D
    min_known: 0.4                  # optional (default 0.4): share of the weight that must be known
    industry:                       # field 'industry', free text from a form or enrichment
      description: ...
      match:                        # first entry with a value found in the industry (whole words) wins
        - {points: 30, values: [software, saas, internet]}
      other: 0                      # optional (default 0): a known industry no entry matches
    employees:                      # field 'employees': "250", "51-200", "1,000+", "5k"
      description: ...
      bands:                        # inclusive, must not overlap; max omitted = no upper bound
        - {min: 200, max: 5000, points: 25}
      other: 0
    country:                        # field 'country', ISO 3166 alpha-2 ("US", "GB"; "UK" is read as GB)
                                    # codes are read as written, so Norway's NO needs no quotes
      description: ...
      match:
        - {points: 15, values: [US, CA, GB]}
      other: 0
    seniority:                      # from field 'job_title' via scoring.titles.classify_title
      description: ...
      points: {c_level: 15, vp: 15, director: 13, manager: 9, individual: 4}
    department:                     # from field 'job_title' too
      description: ...
      points: {revenue_ops: 15, sales: 14, marketing: 12, other: 2}

Every criterion is optional, but at least one must be given.  A criterion's
**weight** is the most it can give (its highest points, ``other``
included); it must be > 0.  Classes a ``points`` mapping leaves out give 0.
Points may be negative (a disqualifier).

Grading (:func:`fit_grade`) -- missing data is explicit, never a zero:

1. Each criterion whose field is absent, empty or unreadable (``"lots"``
   employees, ``"United States"`` as a country, a title the classifier cannot
   read) is **missing**: listed in ``FitGrade.missing`` and left out.
2. ``raw`` = points of the known criteria; ``possible`` = their weights.
3. ``points`` = ``100 * raw / possible`` (rounded to 6 decimals): the fit on
   what is known.  0 when nothing is known.
4. ``known_share`` = ``possible / total weight``.  Below ``min_known`` the
   letter is ``"?"`` (ungraded: too little is known to say); otherwise the
   first of A, B, C whose threshold ``points`` reaches, else D.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from yaml.nodes import Node, ScalarNode

from models.score import UNGRADED, FitGrade
from scoring.errors import IcpConfigError
from scoring.ready import fmt_number
from scoring.titles import DEPARTMENTS, SENIORITIES, classify_title
from scoring.yamlread import Entry, YamlReader, line_of

DEFAULT_MIN_KNOWN = 0.4
GRADE_ORDER: Final[tuple[str, ...]] = ("A", "B", "C")
CRITERIA: Final[tuple[str, ...]] = ("industry", "employees", "country", "seniority", "department")
"""Criterion names, in the order they are scored and reported."""
FIELD_OF: Final[Mapping[str, str]] = {
    "industry": "industry",
    "employees": "employees",
    "country": "country",
    "seniority": "job_title",
    "department": "job_title",
}
"""The lead field each criterion reads."""

ICP_TOP_KEYS: Final[tuple[str, ...]] = ("grades", "min_known", *CRITERIA)
LIST_KEYS: Final[tuple[str, ...]] = ("description", "match", "other")
MATCH_KEYS: Final[tuple[str, ...]] = ("points", "values")
BANDS_KEYS: Final[tuple[str, ...]] = ("description", "bands", "other")
BAND_KEYS: Final[tuple[str, ...]] = ("min", "max", "points")
CLASS_KEYS: Final[tuple[str, ...]] = ("description", "points")
_COUNTRY_ALIASES: Final[Mapping[str, str]] = {"UK": "GB"}


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True, kw_only=True)
class ListChoice:
    """``points`` for a value found in ``values`` (normalised; ISO codes for countries)."""

    points: float
    values: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ListCriterion:
    """Industry or country: the first choice with a matching value gives its points, else ``other``."""

    description: str
    choices: tuple[ListChoice, ...]
    other: float = 0.0

    @property
    def weight(self) -> float:
        return max([self.other, *(c.points for c in self.choices)])


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeBand:
    """Employees from ``min`` to ``max`` inclusive (``max`` ``None``: no upper bound)."""

    min: int
    max: int | None
    points: float
    line: int = 0

    def contains(self, n: int) -> bool:
        return self.min <= n and (self.max is None or n <= self.max)

    @property
    def label(self) -> str:
        return f"{self.min}+" if self.max is None else f"{self.min}-{self.max}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeCriterion:
    """Company size: the band holding the employee count gives its points, else ``other``."""

    description: str
    bands: tuple[SizeBand, ...]
    other: float = 0.0

    @property
    def weight(self) -> float:
        return max([self.other, *(b.points for b in self.bands)])


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassCriterion:
    """Seniority or department: points per class; a class left out gives 0."""

    description: str
    points: Mapping[str, float]

    @property
    def weight(self) -> float:
        return max([0.0, *self.points.values()])


Criterion = ListCriterion | SizeCriterion | ClassCriterion


@dataclass(frozen=True, slots=True, kw_only=True)
class IcpConfig:
    """A validated ideal customer profile.

    ``grades`` maps A, B, C to the normalised fit (0-100) each needs.
    ``version`` is a content hash like :attr:`scoring.config.ScoringConfig.version`.
    """

    grades: Mapping[str, float]
    min_known: float = DEFAULT_MIN_KNOWN
    industry: ListCriterion | None = None
    employees: SizeCriterion | None = None
    country: ListCriterion | None = None
    seniority: ClassCriterion | None = None
    department: ClassCriterion | None = None
    version: str = field(init=False)

    def __post_init__(self) -> None:
        if set(self.grades) != set(GRADE_ORDER):
            msg = f"IcpConfig grades must give exactly A, B and C, got {sorted(self.grades)}"
            raise IcpConfigError(msg)
        a, b, c = (self.grades[g] for g in GRADE_ORDER)
        if not (100 >= a > b > c > 0):
            msg = f"IcpConfig grades must satisfy 100 >= A > B > C > 0, got A={a}, B={b}, C={c}"
            raise IcpConfigError(msg)
        if not 0 < self.min_known <= 1:
            msg = f"IcpConfig min_known must be in (0, 1], got {self.min_known!r}"
            raise IcpConfigError(msg)
        if not self.criteria():
            msg = "IcpConfig needs at least one criterion"
            raise IcpConfigError(msg)
        for name, criterion in self.criteria().items():
            if not criterion.weight > 0:
                msg = f"IcpConfig criterion {name!r} can never give points (weight {criterion.weight})"
                raise IcpConfigError(msg)
        object.__setattr__(self, "version", _icp_hash(self))

    def criteria(self) -> dict[str, Criterion]:
        """The configured criteria by name, in :data:`CRITERIA` order."""
        out: dict[str, Criterion] = {}
        for name in CRITERIA:
            criterion: Criterion | None = getattr(self, name)
            if criterion is not None:
                out[name] = criterion
        return out

    @property
    def total_weight(self) -> float:
        return math.fsum(c.weight for c in self.criteria().values())


# --------------------------------------------------------------------------- grading


def fit_grade(fields: Mapping[str, str], config: IcpConfig) -> FitGrade:
    """Grade a lead from its ``fields`` (``industry``, ``employees``, ``country``, ``job_title``).

    See the module docstring for the exact rule.  Never raises on odd field
    values: what cannot be read is reported missing.
    """
    title = _field(fields, "job_title")
    seniority, department = classify_title(title) if title else (None, None)
    reasons: list[str] = []
    missing: list[str] = []
    raw: list[float] = []
    possible: list[float] = []
    for name, criterion in config.criteria().items():
        value = _field(fields, FIELD_OF[name])
        scored: tuple[float, str] | None
        if value is None:
            scored = None
        elif isinstance(criterion, SizeCriterion):
            scored = _score_size(criterion, value, reasons)
        elif isinstance(criterion, ListCriterion):
            scored = (
                _score_country(criterion, value, reasons)
                if name == "country"
                else _score_industry(criterion, value)
            )
        else:
            cls = seniority if name == "seniority" else department
            if cls is None:
                reasons.append(f"{name}: title {value!r} does not say; not scored")
                scored = None
            else:
                scored = (criterion.points.get(cls, 0.0), f"{name} {cls} (title {value!r})")
        if scored is None:
            missing.append(name)
            continue
        points, text = scored
        raw.append(points)
        possible.append(criterion.weight)
        reasons.append(f"{text}: {_signed(points)} of {fmt_number(criterion.weight)}")
    raw_total = math.fsum(raw)
    possible_total = math.fsum(possible)
    normalised = round(100.0 * raw_total / possible_total, 6) + 0.0 if possible_total > 0 else 0.0
    known_share = round(possible_total / config.total_weight, 9)
    if known_share < config.min_known:
        letter = UNGRADED
        reasons.append(
            f"ungraded: {_pct(known_share)} of the profile's weight is known, {_pct(config.min_known)} needed"
        )
    else:
        letter = next((g for g in GRADE_ORDER if normalised >= config.grades[g]), "D")
    return FitGrade(
        letter=letter,
        points=normalised,
        reasons=tuple(reasons),
        missing=tuple(missing),
        raw=raw_total,
        possible=possible_total,
        known_share=known_share,
    )


def parse_employees(text: str) -> int | None:
    """An employee count from how forms and enrichment write it; ``None`` when unreadable.

    ``"250"`` -> 250, ``"1,000+"`` -> 1000, ``"51-200"`` -> 125 (the whole
    midpoint of a range), ``"10k"`` -> 10000, ``"1.5k"`` -> 1500,
    ``"201 to 500 employees"`` -> 350.  A range whose end is below its start
    is unreadable.
    """
    t = text.strip().lower().replace("\u2013", "-").replace("\u2014", "-")
    t = re.sub(r"\b(?:employees|employee|staff|people|ppl|emp)\b", "", t)
    t = re.sub(r"(?<=\d)[,_ ](?=\d{3}\b)", "", t).strip()
    num = r"(\d+(?:\.\d+)?)\s*(k|m)?"
    if m := re.fullmatch(num + r"\s*\+?", t):
        return _count(m.group(1), m.group(2))
    if m := re.fullmatch(num + r"\s*(?:-|to)\s*" + num, t):
        low, high = _count(m.group(1), m.group(2)), _count(m.group(3), m.group(4))
        if low is None or high is None or high < low:
            return None
        return (low + high) // 2
    if m := re.fullmatch(r"(?:over|more than|>)\s*" + num, t):
        return _count(m.group(1), m.group(2))
    return None


def normalise_industry(text: str) -> str:
    """Lower case, ``&`` as ``and``, punctuation to single spaces: ``"E-Commerce"`` -> ``"e commerce"``."""
    t = text.lower().replace("&", " and ")
    return re.sub(r"[^a-z0-9]+", " ", t).strip()


def normalise_country(text: str) -> str | None:
    """An ISO 3166 alpha-2 code in upper case (``"uk"`` -> ``"GB"``), or ``None``."""
    code = text.strip().upper()
    code = _COUNTRY_ALIASES.get(code, code)
    return code if re.fullmatch(r"[A-Z]{2}", code) else None


def _count(number: str, suffix: str | None) -> int | None:
    value = float(number) * {None: 1, "k": 1_000, "m": 1_000_000}[suffix]
    if not math.isfinite(value):
        return None
    return int(value)


def _field(fields: Mapping[str, str], key: str) -> str | None:
    value = fields.get(key)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _score_industry(criterion: ListCriterion, value: str) -> tuple[float, str]:
    text = f" {normalise_industry(value)} "
    for choice in criterion.choices:
        for v in sorted(choice.values, key=len, reverse=True):  # name the most specific value
            if f" {v} " in text:
                return choice.points, f"industry {value!r} is {v}"
    return criterion.other, f"industry {value!r} is not in the profile"


def _score_country(criterion: ListCriterion, value: str, reasons: list[str]) -> tuple[float, str] | None:
    code = normalise_country(value)
    if code is None:
        reasons.append(f"country {value!r} is not an ISO 3166 alpha-2 code; not scored")
        return None
    for choice in criterion.choices:
        if code in choice.values:
            return choice.points, f"country {code}"
    return criterion.other, f"country {code} is not in the profile"


def _score_size(criterion: SizeCriterion, value: str, reasons: list[str]) -> tuple[float, str] | None:
    n = parse_employees(value)
    if n is None:
        reasons.append(f"employees {value!r} cannot be read as a head count; not scored")
        return None
    shown = f"{value!r}" if value.strip() == str(n) else f"{value!r} (~{n})"
    for band in criterion.bands:
        if band.contains(n):
            return band.points, f"employees {shown} in {band.label}"
    return criterion.other, f"employees {shown} outside the profile's bands"


def _signed(x: float) -> str:
    return ("+" if x >= 0 else "") + fmt_number(x)


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def _icp_hash(config: IcpConfig) -> str:
    payload: dict[str, Any] = {
        "grades": {g: float(config.grades[g]) for g in GRADE_ORDER},
        "min_known": float(config.min_known),
    }
    for name, c in config.criteria().items():
        if isinstance(c, ListCriterion):
            payload[name] = {
                "choices": [{"points": float(x.points), "values": list(x.values)} for x in c.choices],
                "other": float(c.other),
            }
        elif isinstance(c, SizeCriterion):
            payload[name] = {
                "bands": [{"min": b.min, "max": b.max, "points": float(b.points)} for b in c.bands],
                "other": float(c.other),
            }
        else:
            payload[name] = {"points": {k: float(v) for k, v in sorted(c.points.items())}}
        payload[name]["description"] = c.description
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------- loading


def load_icp_config(text: str, source: str = "<string>") -> IcpConfig:
    """Parse and strictly validate ICP YAML; raises :class:`~scoring.errors.IcpConfigError`.

    ``source`` is only used in error messages (pass the file path).
    """
    return _IcpLoader(source).load(text)


class _IcpLoader(YamlReader):
    error_class = IcpConfigError

    def load(self, text: str) -> IcpConfig:
        root = self.root(text, "ICP config", ICP_TOP_KEYS)
        top = self.mapping(root, "top level", ICP_TOP_KEYS)
        self.require(top, ("grades",), line_of(root), "top level", "add 'grades: {{A: 70, B: 50, C: 30}}'")
        if not any(name in top for name in CRITERIA):
            self.fail(
                line_of(root),
                "top level",
                "no criteria",
                f"add at least one of: {', '.join(CRITERIA)}",
            )
        grades = self.grades(top["grades"])
        min_known = DEFAULT_MIN_KNOWN
        if "min_known" in top:
            entry = top["min_known"]
            min_known = self.number(entry, "top level", "min_known", at_least=0.0, at_most=1.0)
            if min_known == 0:
                self.fail(
                    line_of(entry.node),
                    "top level",
                    "'min_known' must be greater than 0",
                    "use a share such as 0.4 (40 % of the weight known)",
                )
        return IcpConfig(
            grades=grades,
            min_known=min_known,
            industry=self.list_criterion(top["industry"], "industry") if "industry" in top else None,
            employees=self.size_criterion(top["employees"]) if "employees" in top else None,
            country=self.list_criterion(top["country"], "country") if "country" in top else None,
            seniority=self.class_criterion(top["seniority"], "seniority", SENIORITIES)
            if "seniority" in top
            else None,
            department=self.class_criterion(top["department"], "department", DEPARTMENTS)
            if "department" in top
            else None,
        )

    def grades(self, entry: Entry) -> dict[str, float]:
        where = "grades"
        entries = self.mapping(entry.node, where, GRADE_ORDER, what="'grades'")
        self.require(
            entries, GRADE_ORDER, line_of(entry.node), where, "give A, B and C, e.g. {{A: 70, B: 50, C: 30}}"
        )
        grades = {g: self.number(entries[g], where, g, positive=True, at_most=100.0) for g in GRADE_ORDER}
        for higher, lower in (("A", "B"), ("B", "C")):
            if not grades[higher] > grades[lower]:
                self.fail(
                    line_of(entries[lower].node),
                    where,
                    f"{lower} ({fmt_number(grades[lower])}) must be below {higher} ({fmt_number(grades[higher])})",
                    "order the thresholds A > B > C",
                )
        return grades

    def criterion_entries(
        self, entry: Entry, name: str, keys: tuple[str, ...], need: str
    ) -> dict[str, Entry]:
        entries = self.mapping(entry.node, name, keys, what=f"{name!r}")
        self.require(entries, ("description", need), line_of(entry.node), name, f"add '{{key}}:' to {name!r}")
        self.text(entries["description"], name, "description")
        return entries

    def weight_check(self, entry: Entry, name: str, weight: float) -> None:
        if not weight > 0:
            self.fail(
                entry.key_line,
                name,
                f"can never give points (highest is {fmt_number(weight)})",
                "give at least one choice positive points, or remove the criterion",
            )

    def other(self, entries: dict[str, Entry], name: str) -> float:
        return self.number(entries["other"], name, "other") if "other" in entries else 0.0

    # ------------------------------------------------------------------ industry / country

    def list_criterion(self, entry: Entry, name: str) -> ListCriterion:
        entries = self.criterion_entries(entry, name, LIST_KEYS, "match")
        example = "each as '- {points: 20, values: [a, b]}'"
        items = self.sequence(entries["match"], name, "match", example)
        seen: dict[str, int] = {}
        choices: list[ListChoice] = []
        for index, node in enumerate(items, start=1):
            where = f"{name} match #{index}"
            sub = self.mapping(node, where, MATCH_KEYS, what="a match entry")
            self.require(sub, MATCH_KEYS, line_of(node), where, "add '{key}:' to the entry")
            points = self.number(sub["points"], where, "points")
            values: list[str] = []
            for item in self.items(sub["values"], where, "values", "values: [a, b]"):
                if name == "country" and isinstance(item, ScalarNode) and item.style is None:
                    # Read the text as written: YAML 1.1 would turn Norway's NO into false.
                    raw = str(item.value).strip()
                    value = self.country(item, where, raw)
                else:
                    raw = self.text_node(item, where, "values")
                    value = self.country(item, where, raw) if name == "country" else normalise_industry(raw)
                if not value:
                    self.fail(line_of(item), where, f"value {raw!r} has no letters or digits", "remove it")
                if value in seen:
                    self.fail(
                        line_of(item),
                        where,
                        f"{value!r} is listed twice (also at line {seen[value]})",
                        "list each value once, under the points it should get",
                    )
                seen[value] = line_of(item)
                values.append(value)
            choices.append(ListChoice(points=points, values=tuple(values), line=line_of(node)))
        criterion = ListCriterion(
            description=self.text(entries["description"], name, "description"),
            choices=tuple(choices),
            other=self.other(entries, name),
        )
        self.weight_check(entry, name, criterion.weight)
        return criterion

    def country(self, node: Node, where: str, raw: str) -> str:
        code = raw.strip().upper()
        if code in _COUNTRY_ALIASES:
            self.fail(
                line_of(node),
                where,
                f"{raw!r} is not an ISO 3166 alpha-2 code",
                f"did you mean {_COUNTRY_ALIASES[code]!r}? (leads saying {code} are read as {_COUNTRY_ALIASES[code]})",
            )
        if not re.fullmatch(r"[A-Z]{2}", code):
            self.fail(
                line_of(node),
                where,
                f"{raw!r} is not an ISO 3166 alpha-2 code",
                "write two-letter codes such as US, GB, DE",
            )
        return code

    # ------------------------------------------------------------------ employees

    def size_criterion(self, entry: Entry) -> SizeCriterion:
        name = "employees"
        entries = self.criterion_entries(entry, name, BANDS_KEYS, "bands")
        items = self.sequence(
            entries["bands"], name, "bands", "each as '- {min: 200, max: 5000, points: 25}'"
        )
        bands: list[SizeBand] = []
        for index, node in enumerate(items, start=1):
            where = f"employees band #{index}"
            sub = self.mapping(node, where, BAND_KEYS, what="a band")
            self.require(sub, ("points",), line_of(node), where, "add 'points:' to the band")
            if "min" not in sub and "max" not in sub:
                self.fail(
                    line_of(node), where, "needs 'min' or 'max'", "e.g. {min: 200, max: 5000, points: 25}"
                )
            low = self.integer(sub["min"], where, "min") if "min" in sub else 0
            high = self.integer(sub["max"], where, "max") if "max" in sub else None
            if high is not None and high < low:
                self.fail(
                    line_of(sub["max"].node),
                    where,
                    f"'max' {high} is below 'min' {low}",
                    "swap them or fix the band",
                )
            band = SizeBand(
                min=low, max=high, points=self.number(sub["points"], where, "points"), line=line_of(node)
            )
            for other in bands:
                if band.min <= (other.max if other.max is not None else math.inf) and other.min <= (
                    band.max if band.max is not None else math.inf
                ):
                    self.fail(
                        band.line,
                        where,
                        f"band {band.label} overlaps band {other.label} (line {other.line})",
                        "make the bands disjoint, e.g. 51-199 and 200-5000",
                    )
            bands.append(band)
        criterion = SizeCriterion(
            description=self.text(entries["description"], name, "description"),
            bands=tuple(bands),
            other=self.other(entries, name),
        )
        self.weight_check(entry, name, criterion.weight)
        return criterion

    # ------------------------------------------------------------------ seniority / department

    def class_criterion(self, entry: Entry, name: str, classes: tuple[str, ...]) -> ClassCriterion:
        entries = self.criterion_entries(entry, name, CLASS_KEYS, "points")
        points_entry = entries["points"]
        sub = self.mapping(points_entry.node, f"{name} points", classes, what="'points'")
        if not sub:
            self.fail(
                line_of(points_entry.node),
                f"{name} points",
                "is empty",
                f"give points to some of: {', '.join(classes)}",
            )
        points = {cls: self.number(e, f"{name} points", cls) for cls, e in sub.items()}
        criterion = ClassCriterion(
            description=self.text(entries["description"], name, "description"),
            points=points,
        )
        self.weight_check(entry, name, criterion.weight)
        return criterion
