"""The columns of a leaderboard table, shared by the markdown and the HTML page so both show
the same cells. Cells hold raw (untrusted) text; each renderer escapes it its own way."""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import quote

from embench.leaderboard import format_score
from embench.leaderboard_site import DAGGER, SiteRow, SiteTable

__all__ = ["Cell", "cells", "header", "result_href"]


@dataclass(frozen=True)
class Cell:
    """``text`` to show, ``sort`` the value the HTML table sorts by (a number, or ``None`` to
    sort by text), and ``links``: (text, target) pairs, the target a result file, a ``#``
    anchor of ours, or an external URL that the renderer links only if it is http(s)."""

    text: str = ""
    sort: float | None = None
    links: tuple[tuple[str, str | None], ...] = ()
    numeric: bool = False


def result_href(file_name: str) -> str:
    """Relative link to a submitted result file (names are checked to be plain already)."""
    return "results/" + quote(file_name)


def is_own_target(target: str | None) -> bool:
    """Whether a link target is one of ours (a :func:`result_href` or a ``#`` anchor), linked
    as it is; every other target goes through the http(s)-only rule of :mod:`safe_links`."""
    return bool(target) and target.startswith(("results/", "#"))


def header(table: SiteTable) -> list[tuple[str, bool]]:
    """Column titles, each with whether the column sorts numerically."""
    main = table.main_score
    cols = [("#", True), ("Encoder", False), (f"{main} (mean ± 95% CI)", True)]
    cols += [("Δ vs #1 (95% CI)", True)] if table.has_deltas else []
    cols += [(m, True) for m in table.others]
    cols += [("Seeds", True), ("Per seed", False), ("Skipped", True), ("Flags", False),
             ("embench", False), ("Result / source", False)]
    return cols


def _score(table: SiteTable, row: SiteRow) -> Cell:
    if math.isnan(row.mean):
        return Cell("n/a", numeric=True)
    text = row.text(table.main_score, row.mean)
    if row.ci is not None:
        text += f" ± {format_score((row.ci[1] - row.ci[0]) / 2)}"
    return Cell(text, row.mean, numeric=True)


def cells(table: SiteTable, row: SiteRow) -> list[Cell]:
    """One row's cells, in :func:`header` order."""
    if row.reported:
        rank = Cell(DAGGER, numeric=True)
    elif row.rank is None:
        rank = Cell("—", numeric=True)
    else:
        rank = Cell(str(row.rank), float(row.rank), numeric=True)
    out = [rank, Cell(row.chart_label), _score(table, row)]
    if table.has_deltas:
        d = row.delta
        out.append(Cell(numeric=True) if d is None else Cell(d.text(), d.delta, numeric=True))
    for metric in table.others:
        value = row.others.get(metric)
        out.append(Cell() if value is None else Cell(row.text(metric, value), value, numeric=True))
    if row.reported:
        assert row.setting is not None
        source = row.setting.source
        out += [Cell("not reported", numeric=True), Cell(), Cell(numeric=True), Cell(), Cell(),
                Cell(links=((source.short, source.url),))]
        return out
    assert row.file is not None
    seeds = ", ".join(str(s) for s in row.seeds)
    skipped = str(row.skipped) + (f" (+{row.missing} missing)" if row.missing else "")
    out += [
        Cell(f"{len(row.seeds)} ({seeds})", float(len(row.seeds)), numeric=True),
        Cell(", ".join(format_score(v) for v in row.per_seed)),
        Cell(skipped, float(row.skipped + row.missing), numeric=True),
        Cell(", ".join(f"⚠ {flag}" for flag in row.flags)),
        Cell(row.file.run.provenance.embench_version),
        Cell(links=((row.file.name, result_href(row.file.name)),
                    ("provenance", "#" + row.file.anchor))),
    ]
    return out
