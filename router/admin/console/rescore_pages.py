"""Simulate for the Scoring and Fit pages: the archive re-scored under the running and the edited file.

The events the workers archived (``LEADROUTER_ARCHIVE_DIR``) over the last 7,
30 or 90 days, up to the admin clock, are re-scored in pure Python
(:mod:`router.backtest.rescore`) under the running scoring and fit versions (the
active published ones, else the files) and under the edited text.  Nothing is
written anywhere: sealed events are opened with their people's data keys, read
from Redis without creating any, and ``leadrouter backtest`` (the worker's own
pipeline on a private Redis) stays the full check.  The page shows how many
leads would become sales-ready (MQLs) either way, the per-team and per-rep
difference as the routing page's bar charts, and examples of leads that would
newly cross or no longer cross.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from router.admin.console.html import h
from router.admin.console.rules_kinds import KindName, RulesKind
from router.admin.console.views import delta_bars
from router.admin.core import AdminCore
from router.admin.http import ApiError
from router.backtest.rescore import MAX_EVENTS, Changed, RescoreReport, compare, day_text
from router.storage import keys
from router.storage.archive import ReadStats, read_archive
from router.storage.config_store import ConfigRejectedError
from router.storage.pii import PiiKeysUnavailable, SealError, Vault

WINDOWS = ("7", "30", "90")
DEFAULT_WINDOW = "30"
MAX_CHART_REPS = 30


def window_picker(chosen: str) -> str:
    options = "".join(f'<option value="{d}"{" selected" if d == chosen else ""}>last {d} days</option>'
                      for d in WINDOWS)
    return f'<label>Archive <select name="dataset" id="dataset">{options}</select></label>'


def _read(root: Path, start: datetime, end: datetime) -> tuple[list[Any], ReadStats, bool]:
    stats = ReadStats()
    out: list[Any] = []
    cut = False
    for event in read_archive(root, start, end, stats):
        if len(out) >= MAX_EVENTS:
            cut = True
            break
        out.append(event)
    return out, stats, cut


async def _open(admin: AdminCore, events: list[Any]) -> tuple[list[Any], int]:
    """Sealed events opened with their people's keys (read, never created); forgotten people's left out."""
    if not any(e.sealed for e in events):
        return events, 0
    try:
        vault = Vault.from_settings(admin.redis, admin.settings.tokens)
        kept: list[Any] = []
        dropped = 0
        for i in range(0, len(events), 1000):
            ok, gone = await vault.open(events[i:i + 1000])
            kept += ok
            dropped += len(gone)
    except (PiiKeysUnavailable, SealError) as exc:
        raise ApiError(503, "archive_sealed", f"The archive holds sealed personal fields that cannot be opened "
                                              f"here ({exc}); run `leadrouter backtest` instead.") from None
    return kept, dropped


async def simulate_scoring(admin: AdminCore, kinds: Mapping[KindName, RulesKind], kind: RulesKind, text: str,
                           window: str) -> tuple[str, str]:
    """(results HTML, message) for an edited scoring or fit text; the caller validated ``text``."""
    if window not in WINDOWS:
        raise ApiError(422, "unknown_window", f"Pick an archive window: {', '.join(WINDOWS)} days.")
    scoring_kind, icp_kind = kinds["scoring"], kinds["icp"]
    running_scoring = await scoring_kind.current()
    running_icp = await icp_kind.current()
    end = datetime.fromtimestamp(admin.clock(), UTC)
    start = end - timedelta(days=int(window))
    root = admin.settings.files.archive_dir
    events, stats, cut = await asyncio.to_thread(_read, root, start, end)
    if not events:
        raise ApiError(404, "no_history", f"No archived events in {root}/events over the last {window} days; the "
                                          "workers archive to LEADROUTER_ARCHIVE_DIR (LEADROUTER_WORKER_ARCHIVE=1).")
    events, forgotten = await _open(admin, events)
    routing = await admin.config()

    def work() -> RescoreReport:
        try:
            scoring = scoring_kind.compile(running_scoring.text)
            icp = icp_kind.compile(running_icp.text)
            edited = kind.compile(text)
        except ConfigRejectedError as exc:
            raise ApiError(422, "config_invalid", str(exc)) from None
        new = (edited, icp) if kind.name == "scoring" else (scoring, edited)
        return compare(events, (scoring, icp), new, routing)

    report = await asyncio.to_thread(work)
    label = f"{scoring_kind.title} {running_scoring.label}, {icp_kind.title} {running_icp.label}"
    notes = []
    if cut:
        notes.append(f"only the first {MAX_EVENTS:,} events of the window were read")
    if forgotten:
        notes.append(f"{forgotten:,} events of forgotten people left out")
    if stats.invalid:
        notes.append(f"{stats.invalid:,} unreadable lines skipped")
    return render(report, window, label, notes), f"Re-scored {report.events:,} archived events against {label}."


def _examples(title: str, element_id: str, rows: tuple[Changed, ...], total: int) -> str:
    if not rows:
        return ""
    def lead(c: Changed) -> str:
        if "@" not in c.crossing.lead:
            return h(c.label)
        return f'<a href="/console/leads/{h(keys.lead_id_for_email(c.crossing.lead))}">{h(c.label)}</a>'

    body = "".join(f"<tr><td>{lead(c)}</td><td>{h(day_text(c.crossing.ts))}</td>"
                   f"<td>{c.crossing.score:.1f}</td><td>{h(c.crossing.grade or '-')}</td>"
                   f"<td class=\"opt\">{h(c.crossing.clause)}</td><td>{h(c.team)} / {h(c.rep_id)}</td></tr>"
                   for c in rows)
    more = f" ({len(rows)} of {total:,})" if total > len(rows) else ""
    return (f"<h2>{h(title)}{h(more)}</h2><table id=\"{element_id}\"><thead><tr><th>Lead</th><th>Crosses</th>"
            '<th>Score</th><th>Grade</th><th class="opt">Clause</th><th>Team / rep</th></tr></thead>'
            f"<tbody>{body}</tbody></table>")


def render(report: RescoreReport, window: str, running_label: str, notes: list[str]) -> str:
    before, after = len(report.running), len(report.edited)
    reps = report.rep_rows()
    shown = [r for r in reps if r[2] != r[3]] or reps
    rep_bars = [(f"{name} ({rep_id})", a, b) for rep_id, name, a, b in shown[:MAX_CHART_REPS]]
    note = f'<p class="muted">{h("; ".join(notes))}.</p>' if notes else ""
    return (f'<div class="card" id="simulation"><h2>Re-scored {report.events:,} archived events of '
            f"{report.leads:,} leads, last {h(window)} days ({h(day_text(report.first))} to "
            f"{h(day_text(report.last))})</h2>"
            f'<p>MQLs (leads crossing to sales-ready): <b id="mql-running">{before:,}</b> running, '
            f'<b id="mql-edited">{after:,}</b> edited ({after - before:+,}); <b id="newly">{report.newly_count:,}'
            f'</b> newly cross, <b id="no-longer">{report.no_longer_count:,}</b> no longer cross. Running: '
            f"{h(running_label)}.</p>{note}"
            '<p class="muted">Pure re-scoring with the worker\'s scoring functions (caps, decay, sales-ready '
            "clauses, fit grade); identity is resolved over the whole window, account intent and the model are "
            "not evaluated, each lead counts once. Leads are placed with the running routing rules. "
            "<code>leadrouter backtest</code> replays the worker itself.</p>"
            "<h2>Per team</h2>"
            + delta_bars(report.team_rows(), title="MQLs per team: running vs edited", element_id="chart-teams")
            + "<h2>Per rep</h2>"
            + delta_bars(rep_bars, title="MQLs per rep: running vs edited", element_id="chart-reps")
            + _examples("Newly crossing", "newly-crossing", report.newly, report.newly_count)
            + _examples("No longer crossing", "no-longer-crossing", report.no_longer, report.no_longer_count)
            + "</div>")
