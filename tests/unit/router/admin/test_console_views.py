"""The ops pages' pieces: validator messages split at their line, numbered listings, escaped diffs, SVG charts."""

from __future__ import annotations

import re

from router.admin.console.views import Problem, delta_bars, diff_table, listing, problems_of, sparkline


def test_a_validator_line_splits_into_where_what_and_the_fix() -> None:
    p = Problem.parse("routing.yaml:14: rule 'emea': unknown field 'contry'; did you mean 'country'?")
    assert (p.source, p.line, p.message, p.suggestion) == (
        "routing.yaml", 14, "rule 'emea': unknown field 'contry'", "did you mean 'country'?")
    p = Problem.parse("the text nests too deep")
    assert (p.source, p.line, p.message, p.suggestion) == ("", None, "the text nests too deep", "")
    # A compiler message with several lines is several problems.
    assert [q.line for q in problems_of(["a.yaml:2: x; y\na.yaml:9: z"])] == [2, 9]


def test_the_listing_highlights_the_problem_lines_and_escapes_the_text() -> None:
    text = "\n".join(f"line {i} <b>" for i in range(1, 41))
    html = listing(text, problems_of(["f.yaml:20: bad <i>value</i>; use 1"]), "text")
    assert '<tr id="text-L20" class="bad"><td class="ln">20</td><td><code>line 20 &lt;b&gt;</code>' in html
    assert 'id="text-L17"' in html and 'id="text-L16"' not in html and 'id="text-L24"' not in html
    assert "bad &lt;i&gt;value&lt;/i&gt;" in html and "→ use 1" in html and "<b>" not in html and "<i>" not in html
    # A line past the end (a problem at end of file) is shown on the last line.
    assert 'id="text-L40" class="bad"' in listing(text, problems_of(["f.yaml:99: ends early"]), "text")
    assert listing(text, [], "text") == ""


def test_the_diff_is_escaped_and_marks_added_and_removed_lines() -> None:
    html = diff_table("a: 1\nb: <x>\n", "a: 1\nb: <y>\n", "v1", "v2")
    assert '<tr class="del"><td><code>-b: &lt;x&gt;</code>' in html
    assert '<tr class="add"><td><code>+b: &lt;y&gt;</code>' in html and "<y>" not in html
    assert "No differences" in diff_table("a", "a", "v1", "v2")


def test_bars_and_sparklines_are_inline_svg_of_the_numbers() -> None:
    svg = delta_bars([("east <script>", 10, 4), ("west", 0, 6)], title="t", element_id="c")
    assert svg.startswith("<svg") and "<script>" not in svg and "east &lt;script&gt;" in svg
    widths = [float(w) for w in re.findall(r'<rect x="\d+" y="\d+" width="([\d.]+)" height="10"', svg)]
    assert widths[:4] == [300.0, 120.0, 0.0, 180.0]  # current then new per row, scaled to the largest (10)
    assert "10→4 (-6)" in svg and "0→6 (+6)" in svg
    assert "<polyline" in sparkline([1, 3, 2], element_id="s", title="x")
    assert "collecting" in sparkline([1], element_id="s", title="x")
