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


def mean_of_items(sums: np.ndarray, n_items: int) -> np.ndarray:
    """The score of per-item values whose mean is the score: each row's sum over the items
    (``sums`` [rows, 1]) divided by their number. :func:`paired_bootstrap_difference`'s default."""
    return sums[:, 0] / n_items


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

    The interval adds the two sources of noise once each. Clips: each resample draws the items
    once, shared by both systems (the pairing: an item hard for one is usually hard for the
    other, so the difference varies far less than either score), and scores every seed on
    them. Seeds: each system's spread of whole-run scores over its seeds, less the part of it
    that is clip-level noise already counted (estimated from the same resamples), as Student's
    t with S - 1 degrees of freedom (:func:`_seed_noise`). Drawing seeds and clips naively
    counts the clip-by-seed noise twice (1.7x too wide where seeds change which clips are
    right but not how many), and a bootstrap of 3 seeds is far too narrow when they disagree.
    One seed gives no seed spread to add (callers say so).

    Simulated coverage of the true expected gap is in ``tests/test_comparison.py`` (slow): 97-99%
    with 3 seeds. The price of few seeds is width: with 3, about 1.4x the width the true noise
    needs when seeds agree and 2x when they disagree; with 5, about 1.25x; with 2, 3x or more.
    The legacy ``RandomState`` keeps its stream across numpy versions, so a generated page that
    is checked for being up to date stays so.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim == 2 and b.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3 or a.shape[1:] != b.shape[1:] or a.shape[1] == 0:
        raise ValueError(f"need [seeds, items] or [seeds, items, k] arrays over the same items, "
                         f"got {a.shape} and {b.shape}")
    n = a.shape[1]
    score = score or mean_of_items

    def per_seed(x: np.ndarray, counts: np.ndarray) -> np.ndarray:  # [rows, seeds]
        return np.stack([score(counts @ x[s], n) for s in range(len(x))], axis=1)

    rng = np.random.RandomState(seed)
    on_a, on_b = np.empty((n_resamples, len(a))), np.empty((n_resamples, len(b)))
    for start in range(0, n_resamples, 256):  # bounded memory: 256 x items at a time
        r = min(256, n_resamples - start)
        draws = rng.randint(0, n, size=(r, n))
        counts = np.stack([np.bincount(row, minlength=n) for row in draws]).astype(float)
        on_a[start:start + r], on_b[start:start + r] = per_seed(a, counts), per_seed(b, counts)
    whole = np.ones((1, n))
    full_a, full_b = per_seed(a, whole)[0], per_seed(b, whole)[0]
    deltas = (on_a.mean(axis=1) - on_b.mean(axis=1)
              + _seed_noise(full_a, on_a, rng) - _seed_noise(full_b, on_b, rng))
    alpha = (1 - confidence) / 2
    return (float(full_a.mean() - full_b.mean()), float(np.quantile(deltas, alpha)),
            float(np.quantile(deltas, 1 - alpha)))


def _seed_noise(full: np.ndarray, on_items: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Draws of the seed-level error of a mean over ``len(full)`` seeds, centred on 0.

    ``full`` holds each seed's score on all items, ``on_items`` [resamples, seeds] its scores on
    resampled items. The seed scores spread by the seed effect plus clip-by-seed noise / n; the
    second is estimated as (mean single-seed variance - variance of the seed mean) x S / (S - 1)
    over the item resamples and taken out, since the clip draws already carry it. What is left,
    s^2, gives the error of the mean as s / sqrt(S) times Student's t with S - 1 degrees of
    freedom: with 3 seeds s itself is uncertain, and a plain bootstrap of 3 values (10 distinct
    means) would make the interval far too narrow whenever seeds matter."""
    n_seeds, n_draws = len(full), len(on_items)
    spread = float(np.var(full, ddof=1)) if n_seeds > 1 else 0.0
    if spread <= 0:
        return np.zeros(n_draws)
    clip_noise = max(0.0, (float(on_items.var(axis=0).mean()) - float(on_items.mean(axis=1).var()))
                     * n_seeds / (n_seeds - 1))
    seed_var = max(0.0, spread - clip_noise)
    return np.sqrt(seed_var / n_seeds) * rng.standard_t(n_seeds - 1, size=n_draws)
