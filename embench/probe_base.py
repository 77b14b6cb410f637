"""What every frozen probe shares: candidates scored on validation, the fitted probe, train-only
standardisation, input checks and the deterministic choice of the best candidate."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

WEIGHTED_SUM = "weighted_sum"
LayerChoice = int | str  # a layer index, or WEIGHTED_SUM


@dataclass(frozen=True)
class CandidateScore:
    """Validation result of one (layer, hyper-parameter) candidate."""

    layer: LayerChoice
    hparam: float
    valid_accuracy: float
    epoch: int | None = None


@dataclass
class FittedProbe:
    """The probe chosen on validation, ready to predict on any split's per-layer clip means."""

    kind: str
    layer: LayerChoice
    hparam_name: str
    hparam: float
    epoch: int | None
    valid_accuracy: float
    candidates: list[CandidateScore]
    num_layers: int
    layer_weights: list[float] | None = None
    _predict: Callable[[list[np.ndarray]], np.ndarray] = field(default=None, repr=False)

    def predict(self, layers: Sequence[np.ndarray], groups: np.ndarray | None = None
                ) -> np.ndarray:
        """Class indices for ``layers`` (one ``[N, D_l]`` array per layer, unstandardised).
        With ``groups`` (row -> clip index ``0..G-1``, e.g. chunks of clips), one prediction per
        group from the rows' mean class probabilities."""
        proba = self._predict(list(layers))
        if groups is not None:
            proba = group_mean(proba, np.asarray(groups))
        return proba.argmax(-1)

    def layer_curve(self) -> tuple[list[float], float | None]:
        """Best validation accuracy of each layer over the hyper-parameter grid, and of the
        weighted sum (``None`` when it was not a candidate) - the usual 'which layer' plot."""
        per_layer = [-math.inf] * self.num_layers
        weighted: float | None = None
        for cand in self.candidates:
            if cand.layer == WEIGHTED_SUM:
                weighted = max(weighted if weighted is not None else -math.inf, cand.valid_accuracy)
            else:
                per_layer[int(cand.layer)] = max(per_layer[int(cand.layer)], cand.valid_accuracy)
        return per_layer, weighted


# -- shared helpers ------------------------------------------------------------------------------
def group_mean(rows: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean of ``rows [N, K]`` per group id (``0..G-1``), ``[G, K]``."""
    n_groups = int(groups.max()) + 1
    sums = np.zeros((n_groups, rows.shape[1]), dtype=np.float64)
    np.add.at(sums, groups, rows)
    return sums / np.bincount(groups, minlength=n_groups)[:, None]


@dataclass
class Standardiser:
    """Per-layer z-scoring with train-split statistics only (constant features keep scale 1)."""

    means: list[np.ndarray]
    scales: list[np.ndarray]

    @classmethod
    def fit(cls, layers: Sequence[np.ndarray]) -> Standardiser:
        means = [a.mean(axis=0, dtype=np.float64).astype(np.float32) for a in layers]
        scales = []
        for a in layers:
            std = a.std(axis=0, dtype=np.float64).astype(np.float32)
            scales.append(np.where(std > 1e-8, std, np.float32(1.0)))
        return cls(means, scales)

    def transform(self, layers: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(layers) != len(self.means):
            raise ValueError(f"expected {len(self.means)} layers, got {len(layers)}")
        return [self.transform_layer(i, a) for i, a in enumerate(layers)]

    def transform_layer(self, layer: int, a: np.ndarray) -> np.ndarray:
        return ((np.asarray(a, dtype=np.float32) - self.means[layer]) / self.scales[layer]).astype(
            np.float32
        )


def check_inputs(train: Sequence[np.ndarray], y_train: np.ndarray,
                  valid: Sequence[np.ndarray], y_valid: np.ndarray) -> None:
    if not train or len(train) != len(valid):
        raise ValueError("train and valid need the same, non-zero number of layers")
    for t, v in zip(train, valid, strict=True):
        if t.ndim != 2 or v.ndim != 2 or t.shape[1] != v.shape[1]:
            raise ValueError("each layer must be a [clips, dim] array, same dim in every split")
        if len(t) != len(y_train) or len(v) != len(y_valid):
            raise ValueError("layer arrays and labels disagree on the number of clips")
    if len(y_train) == 0 or len(y_valid) == 0:
        raise ValueError("train and valid splits must not be empty")


def select_best(candidates: list[CandidateScore], order: list[LayerChoice],
            grid: Sequence[float]) -> CandidateScore:
    """Best validation accuracy; ties go to the earlier candidate in ``order`` (lower layer index,
    weighted sum last), then to the earlier grid value. Deterministic by construction."""
    return min(
        candidates,
        key=lambda c: (-c.valid_accuracy, order.index(c.layer), list(grid).index(c.hparam)),
    )
