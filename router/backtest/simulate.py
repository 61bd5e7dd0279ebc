"""The I/O side of ``leadrouter rules simulate``: reading leads, replaying Kafka, printing and charting.

The routing itself is :func:`rules.simulation.simulate` (pure, in memory).
Leads come from a CSV or JSONL file of catalogue fields, from a built-in
converter over the shared real data sets (Maven CRM pipeline joined with its
accounts, or the Olist MQLs joined with their closed deals), or from the form
fills on the events topic in a time window.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from models import Event, EventType, InvalidEventError
from router.errors import ConfigFileError, RouterError
from router.settings import PACKAGE_ROOT, Settings
from router.storage import keys
from rules import FIELDS
from rules.simulation import SimLead, SimulationReport, lead_facts

DEFAULT_DATASETS = PACKAGE_ROOT.parent / "shared" / "datasets"
DATASETS = ("maven", "olist")

ID_COLUMNS = ("lead_id", "id", "opportunity_id", "mql_id", "email")
TS_COLUMNS = ("ts", "timestamp", "created_at", "date")
# Read from lead files besides the catalogue fields: account matching uses the website.
EXTRA_FIELDS = ("website",)

# office_location values in maven_crm_accounts.csv (spelled as in the data) -> ISO 3166 alpha-2.
MAVEN_COUNTRIES: Mapping[str, str] = {
    "United States": "US", "Belgium": "BE", "Brazil": "BR", "China": "CN", "Germany": "DE", "Italy": "IT",
    "Japan": "JP", "Jordan": "JO", "Kenya": "KE", "Korea": "KR", "Norway": "NO", "Panama": "PA",
    "Philipines": "PH", "Philippines": "PH", "Poland": "PL", "Romania": "RO",
}


class LeadFileError(ConfigFileError):
    """A leads file (or data set) could not be read into leads."""


class KafkaReplayError(RouterError):
    """The events topic could not be replayed."""


class ChartError(RouterError):
    """The comparison chart could not be drawn."""


# --- timestamps ----------------------------------------------------------------------------------


def parse_ts(value: object) -> float | None:
    """Epoch seconds from epoch seconds/milliseconds or an ISO 8601 date or date-time (naive = UTC).

    None for a blank value; raises ValueError for anything else it cannot read.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            return stamp.timestamp()
    if not math.isfinite(number) or number <= 0:
        raise ValueError(value)
    return number / 1000.0 if number > 1e11 else number


def parse_when(text: str, flag: str) -> datetime:
    """An ISO date-time from the command line (naive = UTC)."""
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        msg = f"{flag} {text!r} is not an ISO 8601 date or date-time; write e.g. 2026-11-01 or 2026-11-01T09:00:00Z"
        raise KafkaReplayError(msg) from None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


# --- lead files ----------------------------------------------------------------------------------


def _lead_from_row(row: Mapping[str, object], where: str, fallback_id: str) -> SimLead:
    raw: dict[str, object] = {}
    nested = row.get("fields")
    if isinstance(nested, Mapping):
        raw.update({str(k): v for k, v in nested.items() if str(k) in FIELDS or str(k) in EXTRA_FIELDS})
    raw.update({k: v for k, v in row.items() if k in FIELDS or k in EXTRA_FIELDS})
    lead_id = next((str(row[c]).strip() for c in ID_COLUMNS if row.get(c) not in (None, "")), "") or fallback_id
    ts: float | None = None
    for column in TS_COLUMNS:
        if row.get(column) not in (None, ""):
            try:
                ts = parse_ts(row[column])
            except (ValueError, OverflowError):
                msg = (f"{where}: {column} {row[column]!r} is not a time; use ISO 8601 such as "
                       "2017-06-14 or 2017-06-14T09:30:00Z, or epoch seconds")
                raise LeadFileError(msg) from None
            break
    return SimLead(lead_id=lead_id, facts=lead_facts(raw), ts=ts)


def _check_columns(columns: Iterable[str], path: Path) -> None:
    known = [c for c in columns if c in FIELDS or c in EXTRA_FIELDS]
    if not known:
        msg = (f"{path}: no lead fields found; name the columns (CSV) or keys (JSONL) after catalogue fields: "
               f"{', '.join(FIELDS)} (plus optional lead_id and ts)")
        raise LeadFileError(msg)


def read_leads(path: Path) -> list[SimLead]:
    """Leads from a CSV (header row) or JSONL file, in time order (leads without a time last, in file order)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        msg = f"cannot read leads file {path}: {exc.strerror}; check the --leads path"
        raise LeadFileError(msg) from None
    except UnicodeDecodeError:
        msg = f"leads file {path} is not UTF-8 text; save it as UTF-8 CSV or JSONL"
        raise LeadFileError(msg) from None
    first = text.lstrip()[:1]
    leads: list[SimLead] = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json") or first == "{":
        seen: set[str] = set()
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                msg = f"{path}:{number}: not a JSON object ({exc}); write one lead object per line"
                raise LeadFileError(msg) from None
            if not isinstance(row, dict):
                msg = f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}"
                raise LeadFileError(msg)
            seen.update(row)
            nested = row.get("fields")
            if isinstance(nested, dict):
                seen.update(nested)
            leads.append(_lead_from_row(row, f"{path}:{number}", f"{path.name}:{number}"))
        _check_columns(seen, path)
    else:
        reader = csv.DictReader(io.StringIO(text))
        _check_columns(reader.fieldnames or (), path)
        for row in reader:
            leads.append(_lead_from_row(row, f"{path}:{reader.line_num}", f"{path.name}:{reader.line_num}"))
    return in_time_order(leads)


def in_time_order(leads: Sequence[SimLead]) -> list[SimLead]:
    return sorted(leads, key=lambda lead: (lead.ts is None, lead.ts or 0.0))


# --- built-in data set converters ----------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror}; point --datasets-dir at the shared datasets folder"
        raise LeadFileError(msg) from None


def _day(value: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC).timestamp()


def maven_leads(datasets: Path) -> list[SimLead]:
    """Every opportunity of ``maven_crm_sales_pipeline.csv`` as a lead, joined with its account.

    company = account, industry = sector, employees, country = the account's
    office_location as an ISO code; the time is engage_date (Prospecting
    opportunities have none).  Opportunities without an account have no facts.
    """
    accounts = {r["account"]: r for r in _read_csv(datasets / "maven_crm_accounts.csv")}
    leads: list[SimLead] = []
    for row in _read_csv(datasets / "maven_crm_sales_pipeline.csv"):
        raw: dict[str, object] = {}
        account = accounts.get(row.get("account", "").strip())
        if account is not None:
            raw = {"company": account["account"], "industry": account["sector"], "employees": account["employees"],
                   "country": MAVEN_COUNTRIES.get(account["office_location"].strip())}
        leads.append(SimLead(row["opportunity_id"], lead_facts(raw), _day(row.get("engage_date") or "")))
    return in_time_order(leads)


def olist_leads(datasets: Path) -> list[SimLead]:
    """Every Olist MQL as a lead: source = origin, form_id = landing page, industry = the closed deal's segment.

    Olist is a Brazilian marketplace signing up Brazilian sellers, so every lead has country BR.
    The time is first_contact_date.
    """
    deals = {r["mql_id"]: r for r in _read_csv(datasets / "olist_closed_deals.csv")}
    leads: list[SimLead] = []
    for row in _read_csv(datasets / "olist_marketing_qualified_leads.csv"):
        deal = deals.get(row["mql_id"], {})
        raw: dict[str, object] = {"country": "BR", "source": row.get("origin") or None,
                                  "form_id": row.get("landing_page_id") or None,
                                  "industry": deal.get("business_segment") or None}
        leads.append(SimLead(row["mql_id"], lead_facts(raw), _day(row.get("first_contact_date") or "")))
    return in_time_order(leads)


def dataset_leads(name: str, datasets: Path) -> list[SimLead]:
    if not datasets.is_dir():
        msg = f"datasets folder {datasets} does not exist; pass --datasets-dir with the shared datasets folder"
        raise LeadFileError(msg)
    if name == "maven":
        return maven_leads(datasets)
    if name == "olist":
        return olist_leads(datasets)
    msg = f"unknown data set {name!r}; use one of: {', '.join(DATASETS)}"
    raise LeadFileError(msg)


def write_leads(leads: Sequence[SimLead], path: Path) -> None:
    """Write leads as JSONL (lead_id, ts as ISO, then the facts), which :func:`read_leads` reads back."""
    with path.open("wb") as fh:
        for lead in leads:
            row: dict[str, Any] = {"lead_id": lead.lead_id}
            if lead.ts is not None:
                row["ts"] = datetime.fromtimestamp(lead.ts, UTC).isoformat().replace("+00:00", "Z")
            row.update(lead.facts)
            fh.write(orjson.dumps(row) + b"\n")


# --- Kafka replay --------------------------------------------------------------------------------


def leads_from_form_fills(events: Iterable[Event]) -> list[SimLead]:
    """One lead per email that filled a form: its first fill's time, form and source; fields merged, latest wins."""
    firsts: dict[str, Event] = {}
    fields: dict[str, dict[str, object]] = {}
    for event in sorted(events, key=lambda e: e.ts):
        if event.type is not EventType.FORM_FILL or not event.email:
            continue
        email = keys.normalise_email(event.email)
        firsts.setdefault(email, event)
        merged = fields.setdefault(email, {})
        merged.update({k: v for k, v in event.fields.items() if k in FIELDS and v})
    leads: list[SimLead] = []
    for email, first in firsts.items():
        raw: dict[str, object] = {"form_id": first.form_id, "source": first.source, **fields[email], "email": email}
        leads.append(SimLead(keys.lead_id_for_email(email), lead_facts(raw), first.ts))
    return in_time_order(leads)


async def replay_form_fills(settings: Settings, start: datetime, end: datetime,
                            progress: Callable[[int], None] | None = None, idle_timeout_s: float = 15.0,
                            ) -> tuple[list[SimLead], int]:
    """The form fills on the events topic with a time in [start, end): (leads, events read).

    Each partition is read from the offset ``offsets_for_times(start)`` gives up
    to the first record stamped at or after ``end`` (or the partition's end when
    the replay started), without a consumer group, so nothing is committed.
    Events are kept when their own ``ts`` is in the window.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    if end <= start:
        msg = f"--to {end.isoformat()} is not after --from {start.isoformat()}; swap them"
        raise KafkaReplayError(msg)
    topic = settings.kafka.topic_events
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                client_id=f"{settings.kafka.app_id}-rules-replay", request_timeout_ms=10_000)
    events: list[Event] = []
    read = 0
    try:
        try:
            await consumer.start()
            if topic not in await consumer.topics():
                msg = f"topic {topic!r} does not exist on {settings.kafka.url}; check LEADROUTER_TOPIC_EVENTS"
                raise KafkaReplayError(msg)
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            begins = await consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
            ends = await consumer.end_offsets(tps)
        except KafkaError as exc:
            msg = f"could not read offsets of {topic!r} from Kafka at {settings.kafka.url}: {exc!r}; check KAFKA_URL"
            raise KafkaReplayError(msg) from exc
        # offsets_for_times(start) only tells where to seek: a broker that ignores the
        # timestamp (Tansu answers offset 0) just makes us read more.  The end of each
        # partition is the first record stamped at or after ``end`` (what
        # offsets_for_times(end) would say) or the end offset when the replay started.
        todo: dict[Any, int] = {}
        for tp in tps:
            begin = begins.get(tp)
            if begin is not None and begin.offset < ends[tp]:
                consumer.seek(tp, begin.offset)
                todo[tp] = ends[tp]
        loop = asyncio.get_running_loop()
        last_data = loop.time()
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500)
            if not batch and loop.time() - last_data > idle_timeout_s:
                left = ", ".join(f"partition {tp.partition} up to offset {o}" for tp, o in todo.items())
                msg = f"Kafka sent nothing for {idle_timeout_s:.0f}s while replaying {topic!r} ({left} left)"
                raise KafkaReplayError(msg)
            for tp, messages in batch.items():
                last_data = loop.time()
                for message in messages:
                    stamp = message.timestamp
                    if tp not in todo or message.offset >= todo[tp] or (stamp is not None and stamp >= end_ms):
                        todo.pop(tp, None)
                        break
                    read += 1
                    event = _decode(message.value)
                    if event is not None and start.timestamp() <= event.ts < end.timestamp():
                        events.append(event)
                if tp in todo and await consumer.position(tp) >= todo[tp]:
                    todo.pop(tp)
            if progress is not None and batch:
                progress(read)
    finally:
        await consumer.stop()
    return leads_from_form_fills(events), read


def _decode(value: bytes | None) -> Event | None:
    if not value:
        return None
    try:
        return Event.from_dict(orjson.loads(value))
    except (InvalidEventError, orjson.JSONDecodeError, TypeError, ValueError):
        return None


# --- report --------------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return f"{value:6.2f}" if value is not None else "     -"


def format_report(report: SimulationReport, current_label: str, new_label: str, *, reps: int | None = None) -> list[str]:
    """The report as text lines: teams, reps, moves with examples, SLA load."""
    out: list[str] = []
    span = report.span
    if span is not None:
        out.append(f"{report.leads:,} leads from {span.first_day} to {span.last_day} "
                   f"({span.working_days} working days, Mon-Fri)")
    else:
        out.append(f"{report.leads:,} leads (no timestamps, so no daily load)")
    out.append(f"current: {current_label} (version {report.current.version})")
    out.append(f"new:     {new_label} (version {report.new.version})")
    if report.current.owner_routed or report.new.owner_routed:
        out.append(f"to account owners first: {report.current.owner_routed:,} now, {report.new.owner_routed:,} new")
    out.append("")
    out.append(f"{'team':<14}{'current':>9}{'new':>9}{'change':>9}   leads/rep/working day now -> new")
    for t in report.team_rows():
        out.append(f"{t.team:<14}{t.current:>9,}{t.new:>9,}{t.delta:>+9,}   "
                   f"{_rate(t.current_per_rep_day)} -> {_rate(t.new_per_rep_day)}")
    out.append("")
    rows = report.rep_rows()
    shown = rows if reps is None else rows[:reps]
    out.append(f"{'rep':<22}{'team now -> new':<20}{'current':>9}{'new':>9}{'change':>9}   per working day now -> new")
    for r in shown:
        teams = f"{r.team_current or '-'} -> {r.team_new or '-'}" if r.team_current != r.team_new else (r.team_new or "-")
        out.append(f"{r.rep_id:<22}{teams:<20}{r.current:>9,}{r.new:>9,}{r.delta:>+9,}   "
                   f"{_rate(r.current_per_day)} -> {_rate(r.new_per_day)}")
    if len(shown) < len(rows):
        out.append(f"... {len(rows) - len(shown)} more reps (--reps to show more)")
    out.append("")
    share = f" ({report.moves / report.leads:.1%})" if report.leads else ""
    out.append(f"moved: {report.moves:,} leads change team{share}; {report.rule_changes:,} more change rule only")
    for move in report.examples:
        b, a = move.before, move.after
        out.append(f"  {move.lead.lead_id:<34} {move.lead.label:<32} {b.team}/{b.rule} -> {a.team}/{a.rule}"
                   f"  ({b.rep_id} -> {a.rep_id})")
    if report.moves > len(report.examples):
        out.append(f"  ... {report.moves - len(report.examples):,} more (--examples N to list more)")
    return out


def write_chart(report: SimulationReport, path: Path, current_label: str, new_label: str) -> Path:
    """A PNG with per-team and per-rep lead counts, current next to new."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its font cache notice is not ours to show
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        msg = f"matplotlib is not installed ({exc}); `pip install matplotlib` or pass --no-chart"
        raise ChartError(msg) from None
    teams = report.team_rows()
    reps = sorted(report.rep_rows(), key=lambda r: (r.team_new or r.team_current or "", r.rep_id))
    fig, (ax_team, ax_rep) = plt.subplots(2, 1, figsize=(max(12.0, 0.42 * len(reps) + 2), 10),
                                          gridspec_kw={"height_ratios": [1, 2]})
    width = 0.4
    xs = range(len(teams))
    ax_team.bar([x - width / 2 for x in xs], [t.current for t in teams], width, label=f"current ({current_label})")
    ax_team.bar([x + width / 2 for x in xs], [t.new for t in teams], width, label=f"new ({new_label})")
    ax_team.set_xticks(list(xs), [t.team for t in teams])
    ax_team.set_ylabel("leads")
    ax_team.set_title(f"Leads per team: {report.leads:,} leads, {report.moves:,} change team")
    ax_team.legend()
    xr = range(len(reps))
    ax_rep.bar([x - width / 2 for x in xr], [r.current for r in reps], width, label="current")
    ax_rep.bar([x + width / 2 for x in xr], [r.new for r in reps], width, label="new")
    ax_rep.set_xticks(list(xr), [f"{r.rep_id} [{r.team_new or r.team_current}]" for r in reps],
                      rotation=75, ha="right", fontsize=7)
    ax_rep.set_ylabel("leads")
    span = report.span
    days = f" over {span.working_days} working days" if span is not None else ""
    ax_rep.set_title(f"Leads per rep (round robin within each team){days}")
    ax_rep.legend()
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as exc:
        msg = f"cannot write the chart {path}: {exc.strerror}; pass --chart with a writable path"
        raise ChartError(msg) from None
    finally:
        plt.close(fig)
    return path


class ProgressLine:
    """``routed 5,000/8,800 leads`` on stderr, rewritten in place on a terminal."""

    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def __call__(self, done: int, total: int | None = None) -> None:
        text = f"{self.what} {done:,}/{total:,}" if total else f"{self.what} {done:,}"
        if self.tty:
            end = "\n" if total is not None and done >= total else ""
            print(f"\r{text}", end=end, file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)
