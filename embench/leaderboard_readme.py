"""``leaderboard/README.md``: the published leaderboard as markdown, readable on a code host.

Every string from a result file or the literature goes through :func:`escape_md` (or, for
URLs, :mod:`embench.safe_links`), so no result file can add markup, rows or links of its own.
The page holds no timestamp, so building twice from the same files gives the same bytes.
"""

from __future__ import annotations

from embench.comparison import EXPLANATION
from embench.leaderboard import TITLE, escape_md, format_score
from embench.leaderboard_rows import Cell, cells, header, is_own_target, result_href
from embench.leaderboard_site import DAGGER, ChartSpec, ResultFile, Site, SiteTable
from embench.safe_links import linkify_md, md_link

__all__ = ["CHARTS_DIR", "LITERATURE_INTRO", "RULE", "render_readme"]

CHARTS_DIR = "charts"
RULE = (
    "Rows share a table, and a ranking, only when they agree on task, task version, dataset, "
    "protocol, split, main score, captioner (captioning tasks) and the embench release series "
    "(major.minor) that measured them; a rerun of the same encoder replaces the older row. "
    "Rows marked † are reported in the literature, not measured by embench: they sit beside "
    "measured rows only when their "
    "task, protocol and split are embench's, and are never ranked."
)

LITERATURE_INTRO = (
    "Not measured by embench. A table here whose task, protocol and split are embench's says "
    "so, and moves beside the measured rows once they exist; the others have a protocol or "
    "split of their own and are comparable with no measured table."
)


def _cell(cell: Cell) -> str:
    parts = [escape_md(cell.text)] if cell.text else []
    for text, target in cell.links:
        if is_own_target(target):
            parts.append(f"[{escape_md(text)}]({target})")
        else:
            parts.append(md_link(text, target))
    return " · ".join(parts)


def _image(spec: ChartSpec) -> str:
    return f"![{escape_md(spec.title)}]({CHARTS_DIR}/{spec.name}.png)"


def _meta(table: SiteTable) -> str:
    better = "higher" if table.higher_is_better else "lower"
    text = f"Dataset {escape_md(table.dataset_id)}"
    if not table.measured:
        text = (f"Task {escape_md(table.task)} · protocol {escape_md(table.protocol)} · split "
                f"{escape_md(table.split_id)} · dataset {escape_md(table.dataset_id)}")
    if table.task_version is not None:
        text += f" · task version {escape_md(table.task_version)}"
    if table.series is not None:
        text += f" · embench {escape_md(table.series)}"
    return text + f" · main score **{escape_md(table.main_score)}** ({better} is better)"


def _setting_note(table: SiteTable) -> list[str]:
    out = []
    for s in table.settings:
        link = md_link(s.source.url or "", s.source.url) if s.source.url else ""
        out += [
            f"{DAGGER} {escape_md(s.title)}: reported in the literature, not measured by "
            f"embench. Source: {escape_md(s.source.citation)}, {escape_md(s.source.where)}"
            f"{' ' + link if link else ''}. Protocol: {escape_md(s.protocol_text.rstrip('.'))}. "
            f"Split: {escape_md(s.split_text)}.",
            "",
        ]
    return out


def _table(table: SiteTable, heading: str, charts: dict[str, ChartSpec]) -> list[str]:
    cols = header(table)
    out = [heading, "", _meta(table), ""]
    if not table.measured and any(s.beside_measured for s in table.settings):
        out += [f"No measured row yet for embench's {escape_md(table.title)}: measured rows "
                "appear beside these once a result file for it is submitted.", ""]
    out += ["| " + " | ".join(escape_md(c) for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(c) for c in cells(table, row)) + " |" for row in table.rows]
    out.append("")
    if table.baselines:
        text = " · ".join(f"{escape_md(k)} {format_score(v)}" for k, v in table.baselines.items())
        differ = " (they differ between runs; the newest run's are shown)"
        out += [f"Baselines on the same split: {text}{differ if table.baselines_differ else ''}",
                ""]
    if table.has_deltas:
        out += [escape_md(EXPLANATION), ""]
    elif table.no_column:
        out += [escape_md(table.no_column), ""]
    out += _setting_note(table)
    for row in table.rows:
        if row.notes:
            out += [f"Note on {escape_md(row.label)}: {linkify_md(row.notes)}", ""]
    for label, kept, dropped in table.superseded:
        out += [f"{escape_md(label)}: the newest run {escape_md(kept)} is shown; older runs "
                f"{', '.join(escape_md(d) for d in dropped)} are not ranked.", ""]
    for name in (table.slug, table.slug + "-layers"):
        if name in charts:
            out += [_image(charts[name]), ""]
    return out


def _provenance(file: ResultFile) -> list[str]:
    out = [f'<a id="{file.anchor}"></a>', "",
           f"### [{escape_md('results/' + file.name)}]({result_href(file.name)})", ""]
    out += [f"- {name}: {escape_md(value)}" for name, value in file.provenance()]
    return [*out, ""]


def render_readme(site: Site, charts: list[ChartSpec]) -> str:
    """The whole markdown page."""
    by_name = {c.name: c for c in charts}
    lines = [
        TITLE,
        "",
        "The published leaderboard of [embench](../README.md). Measured rows come from the "
        "result files in [results/](results/), one per submitted run, each validated against "
        "the results schema. The same page with sortable tables and charts is "
        "[index.html](index.html) (open it in a browser; it needs no server).",
        "",
        RULE,
        "",
        "Submit a run with `embench submit RESULT.json` and a pull request (see "
        "[CONTRIBUTING.md](../CONTRIBUTING.md)). This page is generated by `embench "
        "leaderboard build`: do not edit it by hand (`embench leaderboard check` fails when it "
        "is out of date).",
        "",
    ]
    if "heatmap" in by_name:
        lines += ["## Overview", "", _image(by_name["heatmap"]), ""]
    lines += ["## Measured results", ""]
    if not site.measured:
        lines += ["No measured result has been submitted yet: no number on this page was "
                  "measured by embench.", ""]
    for table in site.measured:
        lines += _table(table, f"### {escape_md(table.title)}", by_name)
    if site.literature:
        lines += ["## Reported in the literature", "", LITERATURE_INTRO, ""]
    for table in site.literature:
        lines += _table(table, f"### {escape_md(table.settings[0].title)}", by_name)
    if site.failures:
        head = ["Encoder", "Task", "Protocol", "Error", "Reason", "Result file"]
        lines += ["## Failed pairs", "", "| " + " | ".join(head) + " |", "|---" * 6 + "|"]
        for fail, file in site.failures:
            row = [fail.encoder, fail.task, fail.protocol or "", fail.error_type, fail.reason]
            lines.append("| " + " | ".join(escape_md(c) for c in row)
                         + f" | [{escape_md(file.name)}](#{file.anchor}) |")
        lines.append("")
    lines += ["## Result files", ""]
    if not site.files:
        lines += ["None yet.", ""]
    for file in site.files:
        lines += _provenance(file)
    return "\n".join(lines).rstrip("\n") + "\n"
