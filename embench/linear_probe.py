"""The logistic-regression probe: the cheap linear baseline on the same cached features.

Same contract as :func:`embench.probes.fit_mlp_probe`: per-layer features are standardised with
train statistics, and the layer and ``C`` are chosen on validation only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embench.probe_base import CandidateScore, FittedProbe, Standardiser, check_inputs, select_best


@dataclass(frozen=True)
class LinearConfig:
    """Hyper-parameters of the logistic-regression probe; ``cs`` is the inverse-regularisation
    grid searched on validation."""

    cs: tuple[float, ...] = (0.01, 0.1, 1.0)
    max_iter: int = 2000


def fit_linear_probe(train: Sequence[np.ndarray], y_train: np.ndarray, valid: Sequence[np.ndarray],
                     y_valid: np.ndarray, n_classes: int, seed: int,
                     config: LinearConfig | None = None) -> FittedProbe:
    """Fit a logistic-regression probe per layer and ``C``; pick both on validation accuracy.
    lbfgs is deterministic, so ``seed`` only feeds ``random_state`` and results equal across
    seeds. ``n_classes`` is accepted for symmetry with :func:`fit_mlp_probe`."""
    from sklearn.linear_model import LogisticRegression

    cfg = config or LinearConfig()
    check_inputs(train, y_train, valid, y_valid)
    del n_classes  # classes come from y_train; the caller has checked all of them occur there
    std = Standardiser.fit(train)
    zt, zv = std.transform(train), std.transform(valid)
    candidates: list[CandidateScore] = []
    models = {}
    for layer in range(len(train)):
        for c in cfg.cs:
            model = LogisticRegression(C=c, max_iter=cfg.max_iter, random_state=seed)
            model.fit(zt[layer], y_train)
            acc = float((model.predict(zv[layer]) == y_valid).mean())
            candidates.append(CandidateScore(layer, c, acc, None))
            models[(layer, c)] = model
    chosen = select_best(candidates, list(range(len(train))), cfg.cs)
    model = models[(chosen.layer, chosen.hparam)]
    layer = int(chosen.layer)

    def predict(layers: list[np.ndarray]) -> np.ndarray:
        if len(layers) != len(std.means):
            raise ValueError(f"expected {len(std.means)} layers, got {len(layers)}")
        return model.predict_proba(std.transform_layer(layer, layers[layer]))

    return FittedProbe(
        kind="linear", layer=layer, hparam_name="C", hparam=chosen.hparam, epoch=None,
        valid_accuracy=chosen.valid_accuracy, candidates=candidates, num_layers=len(train),
        _predict=predict,
    )

