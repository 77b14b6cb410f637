"""Read run result files: the schema check, the per-seed consistency checks that catch a file
edited after its run, and folder loading. Every reader of results (the run folder's
leaderboard, the published one, ``embench submit``) goes through here, so they agree on what a
usable file is."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from embench.errors import EmbenchError

if TYPE_CHECKING:  # the pydantic models load on first use, keeping this import cheap
    from embench.results import RunResult

__all__ = ["edited_problems", "load_result_file", "load_results", "run_started",
           "summary_problems"]


def _check_schema(path: Path, data: dict) -> None:
    """Refuse another schema major up front: its field errors would only confuse."""
    from embench import __version__
    from embench.results import SCHEMA_VERSION

    found = str(data.get("schema_version"))
    major, ours = found.split(".")[0], SCHEMA_VERSION.split(".")[0]
    if major == ours:
        return
    prov = data.get("provenance")
    writer = prov.get("embench_version") if isinstance(prov, dict) else None
    head = (f"{path}: result schema {found!r} is not readable by embench {__version__} (it "
            f"reads schema {ours}.x).")
    if not (major.isdigit() and ours.isdigit()):
        raise EmbenchError(f"{head} {found!r} is no schema version any embench release writes; "
                           "the file was probably edited by hand. Use the file as `embench run` "
                           "wrote it, or rerun `embench run` for a fresh one.")
    if writer == __version__:
        # This release writes schema ours.x, so the file's own version claim cannot explain it.
        raise EmbenchError(
            f"{head} The file says embench {writer} wrote it, but embench {writer} writes schema "
            f"{ours}.x, so its schema_version or its provenance.embench_version was edited, or it "
            f"comes from a development build that kept the version number. Use the file as "
            f"`embench run` wrote it, rerun `embench run` for a fresh one, or render it with the "
            f"build that wrote it (any embench release that reads schema {major}.x)."
        )
    by = f"embench {writer}" if writer else "an embench release"
    if int(major) > int(ours):
        raise EmbenchError(
            f"{head} Its schema is newer than this release reads; the file was written by {by}. "
            f"Upgrade embench to a release that reads schema {major}.x (or render it with {by})."
        )
    raise EmbenchError(
        f"{head} Its schema is older than this release reads; the file was written by {by}. "
        f"Render it with {by} or any embench release that reads schema {major}.x, or rerun "
        "`embench run` with this release for a fresh result file."
    )


def _load_one(path: Path, explicit: bool) -> RunResult | None:
    """Parse one file; inside a folder, JSON that is not a run result is someone else's file."""
    from pydantic import ValidationError

    from embench.results import RunResult

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EmbenchError(f"Cannot read result file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # A truncated run result still names its keys; unrelated broken JSON is skipped.
        if explicit or ('"schema_version"' in text and '"run_id"' in text):
            raise EmbenchError(f"{path}: not valid JSON ({exc})") from exc
        return None
    if not (isinstance(data, dict) and "schema_version" in data and "run_id" in data):
        if explicit:
            raise EmbenchError(
                f"{path}: not an embench run result (no 'schema_version' and 'run_id' keys)."
            )
        return None
    _check_schema(path, data)
    try:
        return RunResult.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"field {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        ]
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise EmbenchError(f"{path}: invalid run result: {'; '.join(problems[:5])}{more}"
                           f"{_newer_minor(data, exc)}") from exc


def _newer_minor(data: dict, exc) -> str:
    """A hint when the file's schema is a newer minor version than ours and its only problems
    are fields this release does not know: a newer embench wrote it."""
    from embench.results import SCHEMA_VERSION

    def minor(version: str) -> tuple[int, ...]:
        try:
            return tuple(int(p) for p in version.split("."))
        except ValueError:
            return ()

    found = str(data.get("schema_version"))
    if not minor(found) or minor(found) <= minor(SCHEMA_VERSION):
        return ""
    if any(err["type"] != "extra_forbidden" for err in exc.errors()):
        return ""
    return (f". Its schema {found} is newer than this release's {SCHEMA_VERSION}, and those "
            f"fields are what it added: upgrade embench (install it again from its repository) "
            f"to read the file")


def load_result_file(path: Path) -> RunResult:
    """One run result; any problem (not JSON, not a run result, a field of the wrong type) is an
    :class:`EmbenchError` naming the file and, for schema errors, each field and why."""
    run = _load_one(Path(path), explicit=True)
    assert run is not None  # explicit files raise instead of being skipped
    return run


def summary_problems(i: int, res) -> list[str]:
    """A summary must be what its per-seed scores give, and so must the per-clip item scores
    behind the Δ column: a hand-edited figure would otherwise be ranked as if embench had
    measured it."""
    from embench.results import ScoreSummary

    problems = []
    for metric, summary in res.summary.items():
        values = res.scores.get(metric)
        if not values:
            problems.append(f"field results.{i}.summary.{metric}: no per-seed scores to back it")
            continue
        expected = ScoreSummary.from_values(values)
        for name in ("mean", "ci95_low", "ci95_high", "n"):
            got, want = getattr(summary, name), getattr(expected, name)
            same = (got == want or (isinstance(got, float) and math.isnan(got)
                                    and math.isnan(want)) or math.isclose(got, want,
                                                                          rel_tol=1e-9,
                                                                          abs_tol=1e-9))
            if not same:
                problems.append(f"field results.{i}.summary.{metric}.{name}: {got} but the "
                                f"per-seed scores give {want}; the file was edited after the run")
                break
    if res.item_scores is not None:  # they decide the Δ column, so they must back the scores
        problems += [f"field results.{i}.item_scores: {why}; the file was edited after the run"
                     for why in res.item_scores.problems(res.seeds, res.scores)[:1]]
    return problems


def edited_problems(run: RunResult) -> list[str]:
    """Measured rows whose summary is not what their per-seed scores give (the check `embench
    submit` applies): the file was edited after the run, e.g. a seed's score set to NaN while the
    mean stayed. Reported (literature) rows carry no per-seed scores to check."""
    return [problem for i, res in enumerate(run.results) if not res.reported
            for problem in summary_problems(i, res)]


def _warn(message: str) -> None:
    print(f"embench: warning: {message}", file=sys.stderr)


def load_results(paths: list[Path], warn: Callable[[str], None] | None = None,
                 strict: bool = True) -> list[RunResult]:
    """Load run results from files and folders (searched recursively for ``*.json``).

    A file that cannot be read as a run result is an error (``strict=False``: a warning, and
    the file is left out: ``embench run`` then still renders its own folder's leaderboard); a
    readable one whose summaries its per-seed scores contradict (:func:`edited_problems`) is
    left out with a warning through ``warn`` (default: stderr) naming it and why, so the other
    runs still render."""
    runs: list[RunResult] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = [(p, False) for p in sorted(path.rglob("*.json")) if p.is_file()]
        elif path.is_file():
            candidates = [(path, True)]
        else:
            raise EmbenchError(f"No such result file or folder: {path}")
        for file, explicit in candidates:
            key = file.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                run = _load_one(file, explicit)
            except EmbenchError as exc:
                if strict:
                    raise
                (warn or _warn)(f"left {file} out of the leaderboard: {exc}")
                continue
            if run is None:
                continue
            problems = edited_problems(run)
            if problems:
                (warn or _warn)(
                    f"left {file} out of the leaderboard: " + "; ".join(problems)
                    + ". Use the file as `embench run` wrote it, or rerun the run for a fresh one."
                )
                continue
            runs.append(run)
    return runs


def run_started(run: RunResult) -> datetime:
    """Parse ``started_at`` for comparison; a naive timestamp is taken as UTC."""
    text = run.provenance.started_at.strip()
    try:
        stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
