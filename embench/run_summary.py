"""What ``embench run`` prints when it is done: one table row per pair (score with its 95%
confidence interval, baselines, skipped clips, time), each task's gaps to its best encoder,
then why clips were skipped."""

from __future__ import annotations

import click


def print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"embench run {result.run_id} (mean ± 95% CI over seeds)")
    for col in ("encoder", "task · protocol", "score", "seeds", "baselines", "skipped", "time"):
        table.add_column(col, overflow="fold")
    for r in result.results:
        s = r.main
        table.add_row(_name(r),
                      f"{r.task} · {r.protocol}",
                      score_cell(r.main_score, s), str(len(r.seeds)),
                      " · ".join(f"{k} {v:.2f}" for k, v in r.baselines.items()),
                      str(len(r.skipped)), pair_time(r))
    for f in result.failures:
        table.add_row(f.encoder, f"{f.task} · {f.protocol or ''}", "FAILED", "",
                      f.reason[:80], "", "")
    Console().print(table)


def gap_lines(result) -> list[str]:
    """Per task and protocol with two or more scored encoders: each one's gap to the best, with
    the paired interval of the leaderboard's Δ column (empty where a pair has no item scores)."""
    from embench.comparison import compare_with_top

    groups: dict[tuple, list] = {}
    for r in result.results:
        groups.setdefault((r.task, r.protocol, r.split_id), []).append(r)
    lines = []
    for (task, protocol, _), rows in groups.items():
        rows = sorted(rows, key=lambda r: r.sort_key())
        gaps = [f"{_name(r)} {d.text()}"
                for r, d in zip(rows, compare_with_top(rows)[0], strict=True) if d is not None]
        tied = [_name(r) for r in rows if r.sort_key() == rows[0].sort_key()]
        best = f"best {tied[0]}" if len(tied) == 1 else f"tied best {', '.join(tied)}"
        if gaps:
            lines.append(f"{task} · {protocol}: {best}; gap to {tied[0]} "
                         f"({rows[0].main_score}, paired 95% CI): " + "; ".join(gaps))
    return lines


def _name(r) -> str:
    return r.encoder + (" (random)" if r.weights == "random" else "")


def print_skipped(result, path) -> None:
    """Why clips were left out, a few per pair (the result file lists them all), so a corrupt
    file is seen without opening the JSON."""
    for r in result.results:
        if not r.skipped:
            continue
        shown = "; ".join(f"{s.clip_id}: {s.reason}" for s in r.skipped[:3])
        more = f" (and {len(r.skipped) - 3} more)" if len(r.skipped) > 3 else ""
        click.echo(f"{r.encoder} on {r.task}: {len(r.skipped)} clip(s) skipped - {shown}{more}; "
                   f"all are in {path}", err=True)


def score_cell(name: str, summary) -> str:
    """Mean ± 95% CI half width; one seed has no spread to make an interval from."""
    if summary.n < 2:
        return f"{name} {summary.mean:.2f} (1 seed: no CI)"
    return f"{name} {summary.mean:.2f} ± {summary.ci95_half_width:.2f}"


def pair_time(r) -> str:
    """Wall clock of a pair, and how much of it was extraction (none when all was cached)."""
    def seconds(value: float) -> str:
        return f"{value:.1f} s" if value < 10 else f"{value:,.0f} s"

    if r.duration_s is None:
        return ""
    extracting = r.extract_s is not None and r.extract_s >= 0.05
    return seconds(r.duration_s) + (f" ({seconds(r.extract_s)} extracting)" if extracting else "")
