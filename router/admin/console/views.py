"""Pieces of the ops pages: a numbered listing with problems at their lines, version diffs, inline SVG charts.

Everything is built from escaped text (:func:`router.admin.console.html.h`): the
rules text, the problem messages and rep names may carry markup and never become
any.  Charts are inline SVG with presentation attributes (no ``style``), so the
console's Content-Security-Policy needs no relaxing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from router.admin.console.html import h

# "routing.yaml:14: rule 'x': unknown field 'contry'; did you mean 'country'?"
_AT_LINE = re.compile(r"^(?P<source>.*?):(?P<line>\d{1,7}): (?P<text>.*)$", re.DOTALL)
MAX_DIFF_LINES = 2000


@dataclass(frozen=True, slots=True)
class Problem:
    """One validator message, split into where, what and the fix it suggests."""

    source: str
    line: int | None
    message: str
    suggestion: str

    @classmethod
    def parse(cls, text: str) -> Problem:
        m = _AT_LINE.match(text.strip())
        if m is None:
            source, line, rest = "", None, text.strip()
        else:
            source, line, rest = m["source"], int(m["line"]), m["text"]
        message, _, suggestion = rest.rpartition("; ")
        if not message:  # no "; fix" part
            message, suggestion = rest, ""
        return cls(source, line, message, suggestion)


def problems_of(texts: Iterable[str]) -> list[Problem]:
    out: list[Problem] = []
    for text in texts:
        # A compiler message may hold several problem lines.
        out.extend(Problem.parse(part) for part in str(text).splitlines() if part.strip())
    return out


def problem_list(problems: Sequence[Problem], element_id: str) -> str:
    if not problems:
        return ""
    items = []
    for p in problems:
        where = f'<a href="#{h(element_id)}-L{p.line}">line {p.line}</a>: ' if p.line else ""
        fix = f'<br><span class="muted">Suggestion: {h(p.suggestion)}</span>' if p.suggestion else ""
        items.append(f'<li data-line="{p.line or ""}">{where}{h(p.message)}{fix}</li>')
    return f'<ul class="problems" id="{h(element_id)}-problems">{"".join(items)}</ul>'


def listing(text: str, problems: Sequence[Problem], element_id: str, *, only_near: int | None = 3) -> str:
    """The text with line numbers, each problem's line highlighted and its message under it.

    With ``only_near``, only the lines within that many of a problem are shown (gaps marked),
    so a long file's errors stay on screen; without problems nothing is shown.
    """
    if not problems:
        return ""
    lines = text.split("\n")
    at: dict[int, list[Problem]] = {}
    for p in problems:
        if p.line is not None:
            at.setdefault(min(max(p.line, 1), len(lines)), []).append(p)
    if not at:
        return ""
    shown = set(range(1, len(lines) + 1))
    if only_near is not None:
        shown = {n for line in at for n in range(line - only_near, line + only_near + 1) if 1 <= n <= len(lines)}
    rows: list[str] = []
    last = 0
    for n in sorted(shown):
        if n != last + 1:
            rows.append('<tr class="gap"><td class="ln">…</td><td></td></tr>')
        last = n
        bad = n in at
        cls = ' class="bad"' if bad else ""
        rows.append(f'<tr id="{h(element_id)}-L{n}"{cls}><td class="ln">{n}</td><td><code>{h(lines[n - 1])}</code>'
                    "</td></tr>")
        for p in at.get(n, []):
            fix = f' <span class="fix">→ {h(p.suggestion)}</span>' if p.suggestion else ""
            rows.append(f'<tr class="why"><td class="ln"></td><td>{h(p.message)}{fix}</td></tr>')
    return f'<table class="listing" id="{h(element_id)}-listing"><tbody>{"".join(rows)}</tbody></table>'


def diff_table(old: str, new: str, old_label: str, new_label: str) -> str:
    """A unified diff of two texts as an escaped table (added/removed lines marked)."""
    diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), old_label, new_label, n=3, lineterm=""))
    if not diff:
        return '<p class="muted" id="diff">No differences.</p>'
    cut = len(diff) > MAX_DIFF_LINES
    rows = []
    for line in diff[:MAX_DIFF_LINES]:
        if line.startswith(("+++", "---")):
            cls = "hd"
        elif line.startswith("@@"):
            cls = "hunk"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        else:
            cls = "ctx"
        rows.append(f'<tr class="{cls}"><td><code>{h(line)}</code></td></tr>')
    more = f'<p class="muted">Only the first {MAX_DIFF_LINES} diff lines are shown.</p>' if cut else ""
    return f'<table class="diff" id="diff"><tbody>{"".join(rows)}</tbody></table>{more}'


def delta_bars(rows: Sequence[tuple[str, int, int]], *, title: str, element_id: str) -> str:
    """Horizontal bars of (label, current, new): grey current, blue new, with the change written beside them."""
    if not rows:
        return ""
    label_w, bar_w, row_h = 170, 300, 26
    top = max(1, max(max(c, n) for _, c, n in rows))
    height = row_h * len(rows) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="{h(element_id)}" role="img" class="chart" '
             f'viewBox="0 0 {label_w + bar_w + 90} {height}" width="100%" '
             f'aria-label="{h(title)}"><title>{h(title)}</title>']
    for i, (label, current, new) in enumerate(rows):
        y = 4 + i * row_h
        cw, nw = bar_w * current / top, bar_w * new / top
        delta = new - current
        sign = "+" if delta > 0 else ""
        colour = "#0a7a31" if delta > 0 else "#b42318" if delta < 0 else "#5a6272"
        short = label if len(label) <= 24 else label[:23] + "…"
        parts.append(f'<g data-label="{h(label)}" data-current="{current}" data-new="{new}">'
                     f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">{h(short)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{cw:.1f}" height="10" fill="#b8bfcc"/>'
                     f'<rect x="{label_w}" y="{y + 11}" width="{nw:.1f}" height="10" fill="#2f6fde"/>'
                     f'<text x="{label_w + max(cw, nw) + 6:.1f}" y="{y + 15}" font-size="12" fill="{colour}">'
                     f"{current}→{new} ({sign}{delta})</text></g>")
    y = height - 6
    parts.append(f'<rect x="{label_w}" y="{y - 9}" width="10" height="10" fill="#b8bfcc"/>'
                 f'<text x="{label_w + 14}" y="{y}" font-size="11">running version</text>'
                 f'<rect x="{label_w + 120}" y="{y - 9}" width="10" height="10" fill="#2f6fde"/>'
                 f'<text x="{label_w + 134}" y="{y}" font-size="11">edited version</text></svg>')
    return "".join(parts)


def sparkline(values: Sequence[float], *, element_id: str, title: str, width: int = 160, height: int = 32) -> str:
    """A small line of the values (oldest first); empty with fewer than two."""
    if len(values) < 2:
        return '<span class="muted">collecting…</span>'
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}" for i, v in enumerate(values))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" id="{h(element_id)}" class="spark" role="img" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" aria-label="{h(title)}">'
            f'<title>{h(title)}</title><polyline fill="none" stroke="#2f6fde" stroke-width="1.5" '
            f'points="{points}"/></svg>')


def definition_rows(pairs: Mapping[str, str]) -> str:
    return "".join(f"<tr><th>{h(k)}</th><td>{h(v)}</td></tr>" for k, v in pairs.items())
