"""How much better one row of a leaderboard table is than another: the difference of their
main scores on the test clips both scored, with a paired bootstrap interval.

A row's own "± CI" spans its seeds only; two rows whose intervals overlap may still differ
clearly (they are scored on the same clips), and a deterministic probe has no seed spread at
all. The paired interval answers the question the tables are read for: is the gap real, and
how large is it? It needs each row's :class:`embench.results.ItemScores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and the models load on first comparison: renderers import this
    from embench.results import TaskResult

N_RESAMPLES = 2000


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
    f"{N_RESAMPLES} draws); n.s.: the interval holds 0, so these data cannot tell the two "
    "rows apart. Empty where a row's result file has no per-clip scores (captioning's corpus "
    "BLEU has none, nor have files older than schema 1.1).")


def difference(row: TaskResult, reference: TaskResult) -> Difference | None:
    """``row`` minus ``reference`` on their shared test clips; None when either lacks item
    scores (for its main score) or they share no clip."""
    import numpy as np

    from embench.stats import paired_bootstrap_difference
    if not all(r.item_scores and r.item_scores.values and r.item_scores.metric == r.main_score
               for r in (row, reference)):
        return None
    ref_ids = reference.item_scores.clip_ids
    where = {cid: j for j, cid in enumerate(row.item_scores.clip_ids)}
    shared = [(j, where[cid]) for j, cid in enumerate(ref_ids) if cid in where]
    if not shared:
        return None
    ref_cols, row_cols = (list(c) for c in zip(*shared, strict=True))
    ours = np.asarray(row.item_scores.values, dtype=float)[:, row_cols]
    theirs = np.asarray(reference.item_scores.values, dtype=float)[:, ref_cols]
    delta, low, high = paired_bootstrap_difference(ours, theirs, n_resamples=N_RESAMPLES)
    return Difference(delta, low, high, len(shared))
