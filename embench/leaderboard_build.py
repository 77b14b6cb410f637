"""``embench leaderboard build`` and ``check``: the leaderboard folder's result files in, its
pages and charts out.

A leaderboard folder holds ``results/*.json`` (one submitted run each), ``README.md``,
``index.html`` and ``charts/*.png``. Every result file is validated before anything is
rendered; one bad file stops the build and is named with the field and the reason. ``check``
renders in memory and compares: the two pages byte for byte (they hold no timestamps), each PNG
by the data fingerprint inside it (PNG bytes vary with matplotlib and fonts), so it gives the
same answer on every machine and needs no matplotlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from embench.errors import EmbenchError
from embench.leaderboard import write_text_atomic
from embench.leaderboard_charts import draw_png, fingerprint, read_fingerprint
from embench.leaderboard_html import render_html
from embench.leaderboard_readme import CHARTS_DIR, render_readme
from embench.leaderboard_site import ChartSpec, ResultFile, build_site
from embench.result_files import load_result_file, summary_problems

if TYPE_CHECKING:
    from embench.results import RunResult

__all__ = ["BuildReport", "build", "check", "load_published", "publish_problems"]

RESULTS_DIR, README, INDEX = "results", "README.md", "index.html"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.json$")
_HINT = "run `embench leaderboard build` and commit what it changes"


@dataclass
class BuildReport:
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class _Rendered:
    readme: str
    html: str
    charts: list[ChartSpec]


def publish_problems(run: RunResult) -> list[str]:
    """Why a schema-valid run cannot be published (empty when it can): it must hold measured
    rows only, at least one, each with its main score summarised and one score per seed."""
    if not run.results:
        return [f"field results: no measured result (only {len(run.failures)} failed pair(s)); "
                "there is nothing to rank"]
    problems = []
    for i, res in enumerate(run.results):
        if res.reported:
            problems.append(f"field results.{i}.reported: true; a result file holds only rows "
                            "embench measured (literature numbers go in embench/literature.py, "
                            "with their source)")
        if res.main_score not in res.summary:
            problems.append(f"field results.{i}.summary: no entry for the main score "
                            f"{res.main_score!r}")
        values = res.scores.get(res.main_score, [])
        if len(values) != len(res.seeds):
            problems.append(f"field results.{i}.scores.{res.main_score}: {len(values)} value(s) "
                            f"for {len(res.seeds)} seed(s)")
        problems += summary_problems(i, res)
    return problems


def load_published(board: Path) -> list[ResultFile]:
    """Every result file of the leaderboard folder, validated; all problems in one error."""
    folder = Path(board) / RESULTS_DIR
    if not folder.is_dir():
        raise EmbenchError(f"No result folder {folder}: pass the leaderboard folder with "
                           "--leaderboard-dir (it holds results/, README.md and index.html).")
    files, problems, owners = [], [], {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):  # .gitkeep, editor and temporary files
            continue
        if not SAFE_NAME.match(path.name) or not path.is_file():
            problems.append(f"{path}: only result files named [A-Za-z0-9._-]+.json belong here "
                            "(`embench submit` names them)")
            continue
        try:
            run = load_result_file(path)
        except EmbenchError as exc:
            problems.append(str(exc))
            continue
        problems += [f"{path}: {p}" for p in publish_problems(run)]
        if run.run_id in owners:
            problems.append(f"{path}: run id {run.run_id!r} is also in {owners[run.run_id]}; "
                            "keep one of them")
        owners[run.run_id] = path.name
        files.append(ResultFile(path.name, run))
    if problems:
        raise EmbenchError(f"Invalid result files in {folder}; nothing was rendered:\n- "
                           + "\n- ".join(problems))
    return files


def _render(board: Path) -> _Rendered:
    site = build_site(load_published(board))
    charts = site.charts()
    return _Rendered(render_readme(site, charts), render_html(site, charts), charts)


def _chart_path(board: Path, spec: ChartSpec) -> Path:
    return Path(board) / CHARTS_DIR / f"{spec.name}.png"


def _stale_charts(board: Path, charts: list[ChartSpec]) -> list[Path]:
    expected = {_chart_path(board, c) for c in charts}
    return sorted(p for p in (Path(board) / CHARTS_DIR).glob("*.png") if p not in expected)


def build(board: Path) -> BuildReport:
    """Render the pages and charts; write only what changed (a chart whose fingerprint still
    matches is kept, so another machine's matplotlib does not churn the PNGs)."""
    board = Path(board)
    rendered = _render(board)
    report = BuildReport()
    for spec in rendered.charts:
        path = _chart_path(board, spec)
        if read_fingerprint(path) != fingerprint(spec):
            report.written.append(draw_png(spec, path))
    for path in _stale_charts(board, rendered.charts):
        path.unlink()
        report.removed.append(path)
    for name, text in ((README, rendered.readme), (INDEX, rendered.html)):
        path = board / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text_atomic(path, text)
            report.written.append(path)
    return report


def _hint(board: Path) -> str:
    """The rebuild command for this folder (with ``--leaderboard-dir`` when not the default)."""
    if board.resolve() == Path("leaderboard").resolve():
        return _HINT
    return _HINT.replace("build`", f"build --leaderboard-dir {board}`")


def check(board: Path) -> list[str]:
    """What is out of date with the result files (empty: the folder is current)."""
    board = Path(board)
    rendered = _render(board)
    problems = []
    hint = _hint(board)
    for name, text in ((README, rendered.readme), (INDEX, rendered.html)):
        path = board / name
        if not path.is_file():
            problems.append(f"{path} is missing: {hint}.")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path} is out of date with {board / RESULTS_DIR}: {hint}.")
    for spec in rendered.charts:
        path = _chart_path(board, spec)
        found = read_fingerprint(path)
        if found is None:
            problems.append(f"{path} is missing or has no chart fingerprint: {hint}.")
        elif found != fingerprint(spec):
            problems.append(f"{path} shows other data than the result files give: {hint}.")
    problems += [f"{p} is no chart of the current page: {hint}."
                 for p in _stale_charts(board, rendered.charts)]
    return problems
