"""Render a markdown leaderboard from run results (read by :mod:`embench.result_files`).

Scores are only comparable on the same split under the same protocol and task version, so each
such combination gets its own table; nothing here ever ranks numbers across them. Every string
read from a result file is untrusted (result folders get shared), so it passes through
:func:`escape_md` before it reaches the page.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from embench.result_files import run_started

if TYPE_CHECKING:  # the pydantic models load on first use, keeping this import cheap
    from embench.comparison import Difference
    from embench.results import RunResult, TaskResult

__all__ = [
    "escape_md", "format_score", "TITLE", "render_markdown", "write_markdown",
    "write_text_atomic",
]  # fmt: skip

# One pass with str.translate, so no replacement can be re-escaped by a later one. Brackets and
# angle brackets become entities (no raw "](" or "<tag" survives); markdown punctuation gets a
# backslash, ":" too so GFM cannot autolink "https://..."; GFM finds e-mail addresses after
# unescaping, so "@" gets an invisible word joiner after it; line breaks would end a table row.
_ESCAPES = {
    "&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "&#91;", "]": "&#93;", "\\": "\\\\",
    "`": "\\`", "*": "\\*", "_": "\\_", "|": "\\|", "~": "\\~", ":": "\\:", "@": "@\u2060",
}  # fmt: skip
_ESCAPES.update({c: " " for c in [*map(chr, range(32)), "\x7f", "\u2028", "\u2029"]})
_TABLE = str.maketrans(_ESCAPES)
_WWW = re.compile(r"(?i)\b(www)\.")
_DAGGER = "†"


def escape_md(text: object) -> str:
    """Make ``text`` inert inside a markdown table cell: no HTML, links, emphasis or new rows."""
    return _WWW.sub(r"\1\\.", str(text).translate(_TABLE))  # "www\." is no autolink either


# ---------------------------------------------------------------------------------- rendering


def format_score(value: float) -> str:
    """Two decimals reads well for accuracies and losses; tiny values keep two digits."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.2f}"


_Row = tuple["TaskResult", "RunResult"]
# What makes two scores comparable: the same split, protocol, task version and metric, and for
# captioning the same captioner.
_KEY = attrgetter(
    "task", "task_version", "protocol", "split_id", "dataset_id", "main_score", "higher_is_better",
    "captioner",
)


def _dedup(rows: list[_Row]) -> tuple[list[_Row], list[str]]:
    """Keep the newest run per (encoder, weights): reruns replace, they do not add rows.

    A reported (literature) number is kept beside a measured one: it is not a rerun."""
    best: dict[tuple, _Row] = {}
    dropped: dict[tuple, list[str]] = {}
    for row in rows:
        res, run = row
        key = (res.encoder, res.weights, res.reported)
        old = best.get(key)
        if old is None:
            best[key] = row
            continue
        if (run_started(run), run.run_id) >= (run_started(old[1]), old[1].run_id):
            best[key], row = row, old
        dropped.setdefault(key, []).append(row[1].run_id)
    notes = [
        f"{_encoder_label(best[k][0])}: kept newest run {escape_md(best[k][1].run_id)}, "
        f"dropped {', '.join(escape_md(r) for r in ids)}"
        for k, ids in dropped.items()
    ]
    return list(best.values()), notes


def _encoder_label(res: TaskResult) -> str:
    label = escape_md(res.encoder)
    if res.weights == "random":
        label += " (random init)"
    elif res.weights != "pretrained":
        label += f" ({escape_md(res.weights)} weights)"
    return label


def _deltas(rows: list[_Row]) -> tuple[dict[int, Difference], str | None]:
    """Row index -> the row's difference from the top measured row (sorted rows), where one
    could be made, and the note saying why there is none when some rows have per-clip scores
    but none could be compared (:func:`embench.comparison.compare_with_top`)."""
    from embench.comparison import compare_with_top

    measured = [i for i, (res, _) in enumerate(rows)
                if not res.reported and not math.isinf(_sort_key(res))]
    diffs, note = compare_with_top([rows[i][0] for i in measured])
    return {i: d for i, d in zip(measured, diffs, strict=True) if d is not None}, note


def _sort_key(res: TaskResult) -> float:
    """Best first; a missing or NaN main score sorts last (TaskResult.sort_key would raise)."""
    return res.sort_key() if res.main_score in res.summary else math.inf


def _score_cell(res: TaskResult) -> str:
    """A single seed has no spread estimate, so no ± is shown rather than a fake ± 0."""
    main = res.summary.get(res.main_score)
    if main is None:
        return "n/a"
    if main.n < 2 or math.isnan(main.ci95_half_width):
        return format_score(main.mean)
    return f"{format_score(main.mean)} ± {format_score(main.ci95_half_width)}"


def _baselines_text(baselines: dict[str, float]) -> str:
    return " · ".join(f"{escape_md(k)} {format_score(v)}" for k, v in baselines.items())


def _heading(key: tuple, full: bool) -> str:
    """Task · protocol · split; ``full`` adds what else tells apart tables that share those."""
    task, task_version, protocol, split_id, dataset_id, main_score, higher, captioner = key
    text = f"### {escape_md(task)} · {escape_md(protocol)} · split {escape_md(split_id)}"
    if captioner is not None:
        text += f" · captioner {escape_md(captioner)}"
    if full:
        text += f" · task version {escape_md(task_version)} · dataset {escape_md(dataset_id)}"
        text += f" · {escape_md(main_score)} ({'higher' if higher else 'lower'} is better)"
    return text


def _render_table(key: tuple, rows: list[_Row], heading: str) -> list[str]:
    task, task_version, protocol, split_id, dataset_id, main_score, higher, _ = key
    rows, dedup_notes = _dedup(rows)
    rows.sort(key=lambda r: (_sort_key(r[0]), r[0].encoder, r[0].weights))
    others = sorted({m for res, _ in rows for m in res.summary if m != main_score})
    has_train = any(res.train_scores.get(main_score) for res, _ in rows)
    deltas, no_column = _deltas(rows)
    main = escape_md(main_score)
    out = [
        heading,
        "",
        f"Dataset {escape_md(dataset_id)} · task version {escape_md(task_version)} · "
        f"main score **{main}** ({'higher' if higher else 'lower'} is better)",
        "",
    ]
    header = ["#", "Encoder", f"{main} (mean ± 95% CI)"]
    header += ["Δ vs #1 (95% CI)"] if deltas else []
    header += [escape_md(m) for m in others] + ["n"]
    header += [f"Train {main}"] if has_train else []
    header += ["Skipped", "Flags", "Run / embench"]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    footnotes: list[str] = []
    rank, prev, seen = 0, None, 0
    for i, (res, run) in enumerate(rows, start=1):
        score = _sort_key(res)
        if not res.reported:  # literature rows are shown, never ranked: #1 is measured
            seen += 1
            if score != prev:
                rank, prev = seen, score  # ties share a rank
        label = _encoder_label(res)
        if res.reported:
            footnotes.append(
                f"{_DAGGER} {label}: reported in the literature, not measured by "
                f"embench. Source: {escape_md(res.source or 'not given')}"
            )
            label += f" {_DAGGER}"
        if res.notes:
            footnotes.append(f"Note on {_encoder_label(res)}: {escape_md(res.notes)}")
        shown_rank = _DAGGER if res.reported else "—" if math.isinf(score) else str(rank)
        cells = [shown_rank, label, _score_cell(res)]
        if deltas:
            delta = deltas.get(i - 1)
            cells.append("" if delta is None else delta.text())
        cells += [format_score(res.summary[m].mean) if m in res.summary else "" for m in others]
        cells.append(str(res.summary[main_score].n) if main_score in res.summary else "0")
        if has_train:
            train = res.train_scores.get(main_score) or []
            cells.append(format_score(sum(train) / len(train)) if train else "")
        skipped = str(len(res.skipped))
        if res.missing:
            skipped += f" (+{len(res.missing)} missing)"
        cells += [skipped, ", ".join(f"⚠ {escape_md(f)}" for f in res.flags)]
        cells.append(f"{escape_md(run.run_id)} / {escape_md(run.provenance.embench_version)}")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    with_baselines = [(res, run) for res, run in rows if res.baselines]
    if with_baselines:
        distinct = {tuple(sorted(res.baselines.items())) for res, _ in with_baselines}
        if len(distinct) == 1:
            newest = max(with_baselines, key=lambda r: (run_started(r[1]), r[1].run_id))[0]
            out.append(f"Baselines on the same split: {_baselines_text(newest.baselines)}")
        else:
            out.append("Baselines on the same split (they differ between runs):")
            out += [
                f"- {_encoder_label(res)} ({escape_md(run.run_id)}): "
                f"{_baselines_text(res.baselines)}"
                for res, run in with_baselines
            ]
        out.append("")
    if deltas:
        from embench.comparison import EXPLANATION

        footnotes.append(EXPLANATION)
    elif no_column:
        footnotes.append(no_column)
    if dedup_notes:
        footnotes.append(
            "Several runs scored the same encoder here; only the newest is shown: "
            + "; ".join(dedup_notes)
        )
    for note in footnotes:  # one paragraph each: no trailing-space line breaks needed
        out += [note, ""]
    return out


#: The first line of every leaderboard page, the per-run one and the published README.md
#: (``embench submit`` recognises a leaderboard folder by it).
TITLE = "# embench leaderboard"


def render_markdown(runs: list[RunResult]) -> str:
    """The whole leaderboard page: one table per comparable setting, then failed pairs."""
    lines = [TITLE, ""]
    groups: dict[tuple, list[_Row]] = {}  # nothing with another key may share a table
    for run in runs:
        for res in run.results:
            groups.setdefault(_KEY(res), []).append((res, run))
    if not groups:
        lines += ["No results.", ""]
    keys = sorted(groups, key=lambda k: tuple(str(part) for part in k))
    short = [_heading(k, full=False) for k in keys]
    for key, head in zip(keys, short, strict=True):
        lines += _render_table(key, groups[key], _heading(key, full=short.count(head) > 1))
    failures = [(f, run) for run in runs for f in run.failures]
    if failures:
        header = ["Encoder", "Task", "Protocol", "Error", "Reason", "Run"]
        lines += ["## Failed pairs", "", "| " + " | ".join(header) + " |", "|---" * 6 + "|"]
        for fail, run in failures:
            protocol = fail.protocol or ""
            cells = [fail.encoder, fail.task, protocol, fail.error_type, fail.reason, run.run_id]
            lines.append("| " + " | ".join(escape_md(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_markdown(runs: list[RunResult], path: Path) -> None:
    """Write atomically, so a reader never sees half a page and a crash leaves the old one."""
    write_text_atomic(Path(path), render_markdown(runs))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a leaderboard page is meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
