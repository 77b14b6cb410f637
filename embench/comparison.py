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
    from embench.stats import mean_of_items

    return mean_of_items(sums, n_items)


def _bleu(sums, n_items: int):
    from embench.caption_metrics import bleu_from_stats

    return bleu_from_stats(sums)


#: How a seed's score follows from its clips' summed values: ``ItemScores.aggregate`` -> fn.
AGGREGATES = {"mean": _mean, "bleu": _bleu}


#: Fewest shared test clips, absolute and as a share of the larger row's, for a Δ: a gap measured
#: on a sliver of the test split is not the gap between the rows.
MIN_SHARED_CLIPS = 10
MIN_SHARED_FRACTION = 0.5


@dataclass(frozen=True)
class Difference:
    """``delta`` = row minus reference on ``n_clips`` shared test clips (of ``of_clips``, the
    larger of the two rows' test sets) with its 95% interval; ``seeds`` and ``ref_seeds`` are
    the two rows' seed counts: with one seed, the interval holds no seed-to-seed spread."""

    delta: float
    low: float
    high: float
    n_clips: int
    of_clips: int = 0
    seeds: int = 2
    ref_seeds: int = 2

    @property
    def clear(self) -> bool:
        """True when the interval, as shown (two decimals), leaves out 0 and both rows ran at
        least two seeds: the data tell the two rows apart."""
        return (min(self.seeds, self.ref_seeds) >= 2
                and (round(self.low, 2) > 0 or round(self.high, 2) < 0))

    def text(self) -> str:
        cell = f"{_signed(self.delta)} ({_signed(self.low)}, {_signed(self.high)})"
        if self.seeds < 2:
            cell += " 1 seed"
        elif self.ref_seeds < 2:
            cell += " #1 ran 1 seed"
        elif not self.clear:
            cell += " n.s."
        if self.n_clips < self.of_clips:
            cell += f", {self.n_clips} of {self.of_clips} clips"
        return cell


def _signed(value: float) -> str:
    text = f"{value:+.2f}"
    return "+0.00" if text == "-0.00" else text


#: The footnote every table with a Δ column carries, so the column explains itself.
EXPLANATION = (
    "Δ vs #1: this row's main score minus the top row's, on the test clips both scored, with a "
    "95% interval that adds two noises once each: which clips made the test split (a "
    "bootstrap drawing the clips once for both rows; corpus BLEU recomputed from each draw's "
    "n-gram counts) and each row's seed-to-seed spread (Student's t over its seeds: with 2-3 "
    "seeds that disagree the interval is wide, and more seeds narrow it). n.s.: the interval "
    "holds 0, so these data cannot tell the two rows apart. 1 seed (or #1 ran 1 seed): that "
    "row's seed spread is unknown, so no verdict. \"N of M clips\": the rows share only N "
    "test clips. Each row is compared with #1 on its own: among many equal rows, about one in "
    "twenty looks clear by chance. Empty where either row has no per-clip scores (files "
    "older than schema 1.1, or a main score that is neither a mean over clips nor corpus "
    f"BLEU), or the rows share fewer than {MIN_SHARED_CLIPS} clips or half the larger test "
    "set, or score BLEU of another order.")


def compare_with_top(ranked: list[TaskResult]) -> tuple[list[Difference | None], str | None]:
    """For measured rows best first: each row's difference from the first (None for the first
    and where none can be made), and, when no row could be compared though some carry per-clip
    scores, the note that says why. The one rule every page and the run summary follow."""
    if not ranked:
        return [], None
    top = ranked[0]
    diffs = [None] + [difference(row, top) for row in ranked[1:]]
    if any(d is not None for d in diffs):
        return diffs, None
    return diffs, _no_column_note(top, ranked[1:])


def _no_column_note(top: TaskResult, others: list[TaskResult]) -> str | None:
    """Why a table whose rows carry per-clip scores still has no Δ column (no row could be
    compared with the top one); None when no row has them (there is nothing to explain)."""
    if not any(comparable(r) for r in others):
        return None
    if not comparable(top):
        return ("No Δ vs #1 column: the top row's result file has no per-clip scores for its "
                "main score (written before schema 1.1, or a main score that is neither a mean "
                "over clips nor corpus BLEU).")
    return (f"No Δ vs #1 column: no row shares at least {MIN_SHARED_CLIPS} test clips and half "
            f"the larger test set with the top row, with per-clip scores of the same kind.")


def comparable(result: TaskResult) -> bool:
    """Whether ``result`` has the per-clip scores a Δ needs (for its own main score)."""
    items = result.item_scores
    return bool(items and items.values and items.metric == result.main_score)


def difference(row: TaskResult, reference: TaskResult) -> Difference | None:
    """``row`` minus ``reference`` on their shared test clips; None when either lacks item
    scores (for its main score), they aggregate differently, or they share too few clips."""
    import numpy as np

    from embench.stats import paired_bootstrap_difference

    if not (comparable(row) and comparable(reference)):
        return None
    if row.item_scores.aggregate != reference.item_scores.aggregate:
        return None
    ref_ids = reference.item_scores.clip_ids
    where = {cid: j for j, cid in enumerate(row.item_scores.clip_ids)}
    shared = [(j, where[cid]) for j, cid in enumerate(ref_ids) if cid in where]
    larger = max(len(ref_ids), len(where))
    if len(shared) < max(MIN_SHARED_CLIPS, MIN_SHARED_FRACTION * larger):
        return None
    ref_cols, row_cols = (list(c) for c in zip(*shared, strict=True))
    ours, theirs = row.item_scores.array()[:, row_cols], reference.item_scores.array()[:, ref_cols]
    if ours.shape[2] != theirs.shape[2]:
        return None  # BLEU of another n-gram order
    aggregate = row.item_scores.aggregate
    delta, low, high = paired_bootstrap_difference(ours, theirs, n_resamples=N_RESAMPLES,
                                                   score=AGGREGATES[aggregate])
    if aggregate == "bleu":  # BLEU lies in [0, 100]
        lowest, highest = -100.0, 100.0
    else:  # a mean of values lies between their extremes
        lowest = float(np.nanmin(ours) - np.nanmax(theirs))
        highest = float(np.nanmax(ours) - np.nanmin(theirs))
    low, high = min(max(low, lowest), delta), max(min(high, highest), delta)
    return Difference(delta, low, high, len(shared), larger, len(ours), len(theirs))
