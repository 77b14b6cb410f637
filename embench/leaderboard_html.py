"""``leaderboard/index.html``: the leaderboard as one static page that needs no server.

Sortable tables (a click, or Enter, on a column header), mean ± 95% CI, seeds, inline SVG bar
charts with error bars, the heat map, per-layer curves, and links to each row's result file and
provenance. Two independent layers keep a result file from running script: every string is
``html.escape``d (links only for http(s) URLs), and a Content-Security-Policy allows exactly the
page's own script and style by hash, nothing else (no inline handlers, no external resources).
"""

from __future__ import annotations

import base64
import hashlib
import html

from embench.comparison import EXPLANATION
from embench.leaderboard import format_score
from embench.leaderboard_readme import LITERATURE_INTRO, RULE
from embench.leaderboard_rows import Cell, cells, header, is_own_target, result_href
from embench.leaderboard_site import DAGGER, ChartSpec, ResultFile, Site, SiteTable
from embench.leaderboard_svg import render_svg
from embench.safe_links import html_link, linkify_html

__all__ = ["SCRIPT", "STYLE", "csp", "render_html"]

# Sorts a table by the clicked column: numbers by data-v (cells without one last), text by its
# content; a second click reverses. Ties keep their previous order.
SCRIPT = """
"use strict";
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  heads.forEach(function (th, col) {
    function sort() {
      var up = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var body = table.tBodies[0], num = th.getAttribute("data-type") === "num";
      var rows = Array.prototype.slice.call(body.rows).map(function (tr, i) {
        var cell = tr.cells[col], v = cell.getAttribute("data-v");
        return {tr: tr, i: i, v: num ? (v === null ? null : parseFloat(v))
                                     : cell.textContent.trim().toLowerCase()};
      });
      rows.sort(function (a, b) {
        if (a.v === null || b.v === null) {
          return a.v === b.v ? a.i - b.i : (a.v === null ? 1 : -1);
        }
        var d = a.v < b.v ? -1 : (a.v > b.v ? 1 : 0);
        return (up ? d : -d) || a.i - b.i;
      });
      rows.forEach(function (r) { body.appendChild(r.tr); });
    }
    th.tabIndex = 0;
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
    });
  });
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; padding: 0 1em;
       color: #222; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f3f8; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; white-space: nowrap; }
tr.reported td { background: #f7f7f7; font-style: italic; }
.meta, .note { color: #555; font-size: 0.9em; }
figure { margin: 0.5em 0 1.5em; overflow-x: auto; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; font-size: 0.9em; }
dt { color: #555; }
dd { margin: 0; word-break: break-all; }
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def csp() -> str:
    """Only this page's own script and style may run; no other source of anything."""
    return (f"default-src 'none'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; "
            "img-src 'none'; base-uri 'none'; form-action 'none'")


def _e(text: object) -> str:
    return html.escape(str(text))


def _cell(cell: Cell) -> str:
    parts = [_e(cell.text)] if cell.text else []
    for text, target in cell.links:
        if is_own_target(target):
            parts.append(f'<a href="{_e(target)}">{_e(text)}</a>')
        else:
            parts.append(html_link(text, target))
    attrs = ' class="num"' if cell.numeric else ""
    if cell.sort is not None:
        attrs += f' data-v="{cell.sort!r}"'
    return f"<td{attrs}>{' · '.join(parts)}</td>"


def _meta(table: SiteTable) -> str:
    parts = [f"dataset {_e(table.dataset_id)}"]
    if not table.measured:
        parts[:0] = [f"task {_e(table.task)}", f"protocol {_e(table.protocol)}",
                     f"split {_e(table.split_id)}"]
    if table.task_version is not None:
        parts.append(f"task version {_e(table.task_version)}")
    if table.series is not None:
        parts.append(f"embench {_e(table.series)}")
    better = "higher" if table.higher_is_better else "lower"
    parts.append(f"main score <strong>{_e(table.main_score)}</strong> ({better} is better)")
    return '<p class="meta">' + " · ".join(parts) + "</p>"


def _notes(table: SiteTable) -> list[str]:
    out = []
    if table.baselines:
        text = " · ".join(f"{_e(k)} {format_score(v)}" for k, v in table.baselines.items())
        differ = " (they differ between runs; the newest run's are shown)"
        out.append(f'<p class="note">Baselines on the same split: {text}'
                   f"{differ if table.baselines_differ else ''}</p>")
    if table.has_deltas:
        out.append(f'<p class="note">{_e(EXPLANATION)}</p>')
    elif table.no_column:
        out.append(f'<p class="note">{_e(table.no_column)}</p>')
    for s in table.settings:
        out.append(f'<p class="note">{DAGGER} {_e(s.title)}: reported in the literature, not '
                   f"measured by embench. Source: {_e(s.source.citation)}, {_e(s.source.where)}"
                   f"{' ' + html_link(s.source.url, s.source.url) if s.source.url else ''}. "
                   f"Protocol: {_e(s.protocol_text.rstrip('.'))}. Split: {_e(s.split_text)}.</p>")
    out += [f'<p class="note">Note on {_e(r.label)}: {linkify_html(r.notes)}</p>'
            for r in table.rows if r.notes]
    out += [f'<p class="note">{_e(label)}: the newest run {_e(kept)} is shown; older runs '
            f"{_e(', '.join(dropped))} are not ranked.</p>"
            for label, kept, dropped in table.superseded]
    return out


def _table(table: SiteTable, heading: str, charts: dict[str, ChartSpec]) -> list[str]:
    out = [f'<section id="{table.slug}">', f"<h3>{_e(heading)}</h3>", _meta(table)]
    if not table.measured and any(s.beside_measured for s in table.settings):
        out.append(f'<p class="note">No measured row yet for embench\'s {_e(table.title)}: '
                   "measured rows appear beside these once a result file for it is "
                   "submitted.</p>")
    heads = "".join(f'<th scope="col" data-type="{"num" if num else "text"}">{_e(title)}</th>'
                    for title, num in header(table))
    out += ['<table class="sortable">', f"<thead><tr>{heads}</tr></thead>", "<tbody>"]
    for row in table.rows:
        klass = ' class="reported"' if row.reported else ""
        out.append(f"<tr{klass}>" + "".join(_cell(c) for c in cells(table, row)) + "</tr>")
    out += ["</tbody>", "</table>", *_notes(table)]
    for name in (table.slug, table.slug + "-layers"):
        if name in charts:
            out.append(f"<figure>{render_svg(charts[name])}</figure>")
    return [*out, "</section>"]


def _provenance(file: ResultFile) -> list[str]:
    href = _e(result_href(file.name))
    return [f'<section id="{file.anchor}">',
            f'<h3><a href="{href}">results/{_e(file.name)}</a></h3>', "<dl>",
            *(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in file.provenance()),
            "</dl>", "</section>"]


def render_html(site: Site, charts: list[ChartSpec]) -> str:
    """The whole HTML page."""
    by_name = {c.name: c for c in charts}
    out = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp()}">',
        '<meta name="referrer" content="no-referrer">', "<title>embench leaderboard</title>",
        f"<style>{STYLE}</style>", "</head>", "<body>", "<h1>embench leaderboard</h1>",
        "<p>Measured rows come from the result files in <a href=\"results/\">results/</a>, one "
        "per submitted run, each validated against the results schema. Click a column header "
        "to sort. Submit a run with <code>embench submit RESULT.json</code> and a pull request "
        "(see CONTRIBUTING.md). Generated by <code>embench leaderboard build</code>.</p>",
        f"<p>{_e(RULE)}</p>",
    ]
    if "heatmap" in by_name:
        out += ['<h2 id="overview">Overview</h2>', f"<figure>{render_svg(by_name['heatmap'])}"
                "</figure>"]
    out.append('<h2 id="measured">Measured results</h2>')
    if not site.measured:
        out.append("<p>No measured result has been submitted yet: no number on this page was "
                   "measured by embench.</p>")
    for table in site.measured:
        out += _table(table, table.title, by_name)
    if site.literature:
        out += ['<h2 id="literature">Reported in the literature</h2>',
                f"<p>{_e(LITERATURE_INTRO)}</p>"]
    for table in site.literature:
        out += _table(table, table.settings[0].title, by_name)
    if site.failures:
        out += ['<h2 id="failures">Failed pairs</h2>', "<table>", "<thead><tr>"
                + "".join(f"<th>{h}</th>" for h in ("Encoder", "Task", "Protocol", "Error",
                                                     "Reason", "Result file"))
                + "</tr></thead>", "<tbody>"]
        for fail, file in site.failures:
            row = [fail.encoder, fail.task, fail.protocol or "", fail.error_type, fail.reason]
            out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row)
                       + f'<td><a href="#{file.anchor}">{_e(file.name)}</a></td></tr>')
        out += ["</tbody>", "</table>"]
    out.append('<h2 id="files">Result files</h2>')
    if not site.files:
        out.append("<p>None yet.</p>")
    for file in site.files:
        out += _provenance(file)
    out += [f"<script>{SCRIPT}</script>", "</body>", "</html>"]
    return "\n".join(out) + "\n"
