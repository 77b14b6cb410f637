"""Small statistics helpers: confidence intervals across seeds and over test items."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, CI low, CI high and sample std of ``values`` (Student t; a single value has a
    zero-width interval because nothing is known about its spread)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean, mean, 0.0
    from scipy.stats import t

    std = float(arr.std(ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, arr.size - 1)) * std / math.sqrt(arr.size)
    return mean, mean - half, mean + half, std


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` over test items (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    stats = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = rng.integers(0, n, n)
        stats[i] = metric(y_true[idx], y_pred[idx])
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def paired_bootstrap_difference(
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    score: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> tuple[float, float, float]:
    """Score of ``a`` minus score of ``b`` (each the mean over its seeds) and a percentile
    bootstrap interval, for two systems scored on the same items (item ``j`` of both is one).

    ``a``/``b`` are ``[seeds, items]`` per-item values whose mean is a seed's score (accuracy),
    or ``[seeds, items, k]`` per-item statistics that ``score(sums, n_items)`` turns into a
    score, row by row of ``sums`` ``[rows, k]`` (corpus BLEU from summed n-gram counts).

    Each resample draws the items once, shared by both systems (the pairing: an item that is
    hard for one is usually hard for the other, so the difference varies far less than either
    score), and each system's seeds on their own, so the interval covers both which items made
    the test split and the training noise over seeds. Simulated coverage of the true expected
    gap (``tests/test_comparison.py``, slow): about 95% or more while seed-to-seed swings are
    small next to the test split's sampling noise (the usual case: drawing both levels then
    errs wide), but under 90% with 2-3 seeds that swing accuracy by about 10 points, where
    only more seeds help. A fixed ``seed`` makes the interval reproducible, which a generated
    page that is checked for being up to date needs.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim == 2 and b.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3 or a.shape[1:] != b.shape[1:] or a.shape[1] == 0:
        raise ValueError(f"need [seeds, items] or [seeds, items, k] arrays over the same items, "
                         f"got {a.shape} and {b.shape}")
    n = a.shape[1]
    if score is None:
        def score(sums: np.ndarray, n_items: int) -> np.ndarray:
            return sums[:, 0] / n_items

    def per_seed(x: np.ndarray, counts: np.ndarray) -> np.ndarray:  # [rows, seeds]
        return np.stack([score(counts @ x[s], n) for s in range(len(x))], axis=1)

    whole = np.ones((1, n))
    point = float(per_seed(a, whole).mean() - per_seed(b, whole).mean())
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_resamples)
    for start in range(0, n_resamples, 256):  # bounded memory: 256 x items at a time
        r = min(256, n_resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(float)
        seeds_a = rng.multinomial(len(a), np.full(len(a), 1.0 / len(a)), size=r) / len(a)
        seeds_b = rng.multinomial(len(b), np.full(len(b), 1.0 / len(b)), size=r) / len(b)
        deltas[start:start + r] = (_seed_mean(seeds_a, per_seed(a, counts))
                                   - _seed_mean(seeds_b, per_seed(b, counts)))
    alpha = (1 - confidence) / 2
    return (point, float(np.quantile(deltas, alpha)), float(np.quantile(deltas, 1 - alpha)))


def _seed_mean(weights: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The resampled mean over seeds (``weights`` [rows, seeds] from drawing seeds with
    replacement), its spread widened by sqrt(S / (S - 1)): drawing from S values alone gives
    (S - 1) / S of their variance, a third too little with 3 seeds."""
    n_seeds = scores.shape[1]
    mean = scores.mean(axis=1)
    drawn = (weights * scores).sum(axis=1)
    return mean + np.sqrt(n_seeds / (n_seeds - 1)) * (drawn - mean) if n_seeds > 1 else drawn
