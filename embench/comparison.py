"""How much better one row of a leaderboard table is than another: the difference of their
main scores on the test clips both scored, with a paired bootstrap interval.

A row's own "± CI" spans its seeds only; two rows whose intervals overlap may still differ
clearly (they are scored on the same clips), and a deterministic probe has no seed spread at
all. The paired interval answers the question the tables are read for: is the gap real, and
how large is it? It needs each row's :class:`embench.results.ItemScores`: per-clip values for
a mean over clips (accuracy), per-clip n-gram counts for corpus BLEU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and the models load on first comparison: renderers import this
    from embench.results import TaskResult

N_RESAMPLES = 2000


def _mean(sums, n_items: int):
    return sums[:, 0] / n_items


def _bleu(sums, n_items: int):
    from embench.caption_metrics import bleu_from_stats

    return bleu_from_stats(sums)


#: How a seed's score follows from its clips' summed values: ``ItemScores.aggregate`` -> fn.
AGGREGATES = {"mean": _mean, "bleu": _bleu}


@dataclass(frozen=True)
class Difference:
    """``delta`` = row minus reference on ``n_clips`` shared test clips; 95% interval."""

    delta: float
    low: float
    high: float
    n_clips: int

    @property
    def clear(self) -> bool:
        """True when the interval leaves out 0: the data tell the two rows apart."""
        return self.low > 0 or self.high < 0

    def text(self) -> str:
        cell = f"{self.delta:+.2f} ({self.low:+.2f}, {self.high:+.2f})"
        return cell if self.clear else cell + " n.s."


#: The footnote every table with a Δ column carries, so the column explains itself.
EXPLANATION = (
    "Δ vs #1: this row's main score minus the top row's, on the test clips both scored, with a "
    "95% paired bootstrap interval (clips drawn once for both rows, seeds drawn per row, "
    f"{N_RESAMPLES} draws; corpus BLEU is recomputed from each draw's n-gram counts); n.s.: the "
    "interval holds 0, so these data cannot tell the two rows apart. Empty where a row's "
    "result file has no per-clip scores (files older than schema 1.1, or a main score that is "
    "neither a mean over clips nor corpus BLEU).")


def difference(row: TaskResult, reference: TaskResult) -> Difference | None:
    """``row`` minus ``reference`` on their shared test clips; None when either lacks item
    scores (for its main score) or they share no clip."""
    from embench.stats import paired_bootstrap_difference
    if not all(r.item_scores and r.item_scores.values and r.item_scores.metric == r.main_score
               for r in (row, reference)):
        return None
    if row.item_scores.aggregate != reference.item_scores.aggregate:
        return None
    ref_ids = reference.item_scores.clip_ids
    where = {cid: j for j, cid in enumerate(row.item_scores.clip_ids)}
    shared = [(j, where[cid]) for j, cid in enumerate(ref_ids) if cid in where]
    if not shared:
        return None
    ref_cols, row_cols = (list(c) for c in zip(*shared, strict=True))
    ours, theirs = row.item_scores.array()[:, row_cols], reference.item_scores.array()[:, ref_cols]
    if ours.shape[2] != theirs.shape[2]:
        return None  # BLEU of another n-gram order
    delta, low, high = paired_bootstrap_difference(
        ours, theirs, n_resamples=N_RESAMPLES, score=AGGREGATES[row.item_scores.aggregate])
    return Difference(delta, low, high, len(shared))
