"""``embench submit RESULT.json``: put one run on the published leaderboard.

The run is validated (schema, then the publishing rules of :func:`publish_problems`), copied
into ``<leaderboard>/results/`` under a name made of what it measured and its run id, and the
page is rebuilt. Submitting the same run again changes nothing; a *different* file with the same
run id is refused, because a run id names one run. If the rebuild fails, the copy is taken
back, so the folder is never left with a result its page does not show.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embench.errors import EmbenchError
from embench.leaderboard import TITLE, write_text_atomic
from embench.leaderboard_build import (
    INDEX,
    README,
    RESULTS_DIR,
    SAFE_NAME,
    BuildReport,
    build,
    load_published,
    publish_problems,
)
from embench.result_files import load_result_file

if TYPE_CHECKING:
    from embench.results import RunResult

__all__ = ["Submission", "stable_name", "submit_result"]

_FIX = ("Fix what is named above (or rerun `embench run` for a fresh result file) and submit "
        "again.")


@dataclass(frozen=True)
class Submission:
    path: Path
    run: RunResult
    added: bool  # False: the same run was already there
    report: BuildReport


def _part(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[:limit].strip(".-") or "x"


def _one_or_count(names: set[str], what: str) -> str:
    return _part(next(iter(names))) if len(names) == 1 else f"{len(names)}-{what}"


def stable_name(run: RunResult) -> str:
    """``<encoder>__<task>__<run id>.json`` (``N-encoders``/``N-tasks`` for several), made of
    ``[A-Za-z0-9._-]`` only; a run id that had to be altered gets a hash of itself, so two runs
    can never share a name."""
    encoders = _one_or_count({r.encoder for r in run.results}, "encoders")
    tasks = _one_or_count({r.task for r in run.results}, "tasks")
    run_id = _part(run.run_id, 64)
    if run_id != run.run_id:
        run_id += "-" + hashlib.sha256(run.run_id.encode("utf-8")).hexdigest()[:8]
    name = f"{encoders}__{tasks}__{run_id}.json"
    assert SAFE_NAME.match(name), name
    return name


def _is_leaderboard(board: Path) -> bool:
    """A folder `embench submit` may write to: it has ``results/``, or the README.md that
    `embench leaderboard build` writes (``results/`` may be lost where git dropped it empty)."""
    if (board / RESULTS_DIR).is_dir():
        return True
    try:
        with (board / README).open(encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n") == TITLE
    except (OSError, UnicodeDecodeError):
        return False


def _validated(path: Path) -> RunResult:
    if not path.is_file():
        raise EmbenchError(f"No result file at {path}: pass a run-*.json written by `embench run` "
                           "(in its --output-dir, default ./embench-results).")
    try:
        run = load_result_file(path)
    except EmbenchError as exc:
        raise EmbenchError(f"{exc}\n{_FIX}") from None
    problems = publish_problems(run)
    if problems:
        raise EmbenchError(f"{path} cannot be submitted:\n- " + "\n- ".join(problems)
                           + f"\n{_FIX}")
    return run


def submit_result(path: Path, board: Path) -> Submission:
    """Validate ``path``, copy it into ``board/results/`` and rebuild the page."""
    path, board = Path(path), Path(board)
    run = _validated(path)
    if not board.is_dir():
        raise EmbenchError(f"No leaderboard folder at {board}: run this from the embench "
                           "checkout (it has leaderboard/) or pass --leaderboard-dir.")
    if not _is_leaderboard(board):
        raise EmbenchError(
            f"{board} does not look like an embench leaderboard folder: it has no {RESULTS_DIR}/ "
            f"subfolder and no leaderboard {README}, and nothing was written to it. A leaderboard "
            f"folder holds {RESULTS_DIR}/ (one submitted result file each), {README}, {INDEX} "
            f"and charts/ (the embench checkout ships one as leaderboard/). Pass that folder with "
            f"--leaderboard-dir; to start a new leaderboard in {board} on purpose, create "
            f"{board / RESULTS_DIR} first (e.g. `mkdir {board / RESULTS_DIR}`) and submit again."
        )
    (board / RESULTS_DIR).mkdir(exist_ok=True)
    text = path.read_text(encoding="utf-8")
    for existing in load_published(board):
        if existing.run.run_id == run.run_id:
            there = board / RESULTS_DIR / existing.name
            if json.loads(there.read_text(encoding="utf-8")) != json.loads(text):
                raise EmbenchError(f"{there} already holds run {run.run_id!r} with other "
                                   "content; a run id names one run. Remove that file first if "
                                   "this one replaces it.")
            return Submission(there, run, added=False, report=build(board))
    dest = board / RESULTS_DIR / stable_name(run)
    write_text_atomic(dest, text)
    try:
        report = build(board)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Submission(dest, run, added=True, report=report)
