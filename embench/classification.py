"""The shared frozen-probe protocol for single-label classification tasks.

Tasks call :func:`evaluate_classification` from ``Task.evaluate`` so that every classification
score in a results table was produced by the same code: clip-mean features, a probe whose layer,
learning rate and epoch are chosen on validation (:mod:`embench.probes`), and test touched once
per seed. All scores and baselines are percentages (0..100).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from embench.errors import EmbenchError
from embench.linear_probe import LinearConfig, fit_linear_probe
from embench.probes import WEIGHTED_SUM, FittedProbe, MLPConfig, fit_mlp_probe
from embench.results import ItemScores
from embench.stats import bootstrap_ci
from embench.task import SPLITS, EvalContext, Evaluation

PROBES: dict[str, Callable[..., FittedProbe]] = {"mlp": fit_mlp_probe, "linear": fit_linear_probe}

@dataclass
class _SplitData:
    """Per-layer clip means and label indices of one split."""

    ids: list[str]
    layers: list[np.ndarray]
    y: np.ndarray


def _label_names(ctx: EvalContext) -> tuple[str, ...]:
    if ctx.clips.labels:
        return tuple(ctx.clips.labels)
    return tuple(sorted({str(c.target) for c in ctx.clips}))


def _split_data(ctx: EvalContext, labels: tuple[str, ...]) -> dict[str, _SplitData]:
    """Group the clips that have cached features by split, reading the cache once per layer."""
    if ctx.features is None:
        raise EmbenchError("The classification probe needs cached features, but none were given.")
    by_id = {c.id: c for c in ctx.clips}
    index = {name: i for i, name in enumerate(labels)}
    ids = [cid for cid in ctx.features.clip_ids if cid in by_id]
    unknown = sorted({str(by_id[cid].target) for cid in ids} - set(index))
    if unknown:
        raise EmbenchError(
            f"{ctx.clips.dataset_id}: targets {unknown[:5]} are not among the task's labels "
            f"{list(labels)[:10]}; the task's ClipSet.labels is incomplete."
        )
    if not ids:
        raise EmbenchError(f"{ctx.clips.dataset_id}: no clip has cached features; nothing to score")
    means = ctx.features.all_clip_means(ids)
    out: dict[str, _SplitData] = {}
    for split in SPLITS:
        rows = [i for i, cid in enumerate(ids) if by_id[cid].split == split]
        out[split] = _SplitData(
            ids=[ids[i] for i in rows],
            layers=[m[rows] for m in means],
            y=np.array([index[str(by_id[ids[i]].target)] for i in rows], dtype=np.int64),
        )
    return out


def _check_splits(data: dict[str, _SplitData], labels: tuple[str, ...], dataset: str) -> None:
    """Refuse to score what cannot be scored fairly: an empty split, or a class the probe never
    sees in training (its test clips would count as errors no probe could avoid)."""
    for split, d in data.items():
        if len(d.y) == 0:
            raise EmbenchError(
                f"{dataset}: the {split!r} split has no clips with cached features; the probe "
                f"needs train, valid and test clips (check the split definition and skipped clips)."
            )
    if len(labels) < 2:
        raise EmbenchError(f"{dataset}: classification needs at least two labels, got {labels}.")
    counts = np.bincount(data["train"].y, minlength=len(labels))
    missing = [labels[i] for i in np.flatnonzero(counts == 0)]
    if missing:
        raise EmbenchError(
            f"{dataset}: classes {missing[:10]} have no training clips with cached features; "
            f"a probe cannot learn them. Fix the split or the label list."
        )


def _percent(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred) * 100.0)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(
        f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0)
        * 100.0
    )


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[list[int]]:
    """Rows are true labels, columns predictions, both in label order."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix.tolist()


def classification_baselines(y_train: np.ndarray, y_test: np.ndarray, n_classes: int
                             ) -> dict[str, float]:
    """Chance (uniform guessing, ``100 / n_classes``) and majority (always predicting the most
    frequent *train* label, ties to the lowest label index) accuracy on test, in percent."""
    majority = int(np.argmax(np.bincount(y_train, minlength=n_classes)))
    return {
        "chance": 100.0 / n_classes,
        "majority": _percent(y_test, np.full_like(y_test, majority)),
    }


def _seed_details(seed: int, probe: FittedProbe, confusion: list[list[int]]) -> dict[str, Any]:
    curve, weighted = probe.layer_curve()
    return {
        "seed": seed,
        "layer": probe.layer,
        probe.hparam_name: probe.hparam,
        "epoch": probe.epoch,
        "valid_accuracy": probe.valid_accuracy * 100.0,
        "valid_accuracy_by_layer": [a * 100.0 for a in curve],
        "valid_accuracy_weighted_sum": None if weighted is None else weighted * 100.0,
        "layer_weights": probe.layer_weights,
        "confusion_matrix": confusion,
    }


def _probe_config(kind: str, lrs: Sequence[float] | None, cs: Sequence[float] | None,
                  mlp_config: MLPConfig | None) -> MLPConfig | LinearConfig:
    if kind == "mlp":
        config = mlp_config or MLPConfig()
        return config if lrs is None else replace(config, lrs=tuple(lrs))
    return LinearConfig() if cs is None else LinearConfig(cs=tuple(cs))


def evaluate_classification(
    ctx: EvalContext,
    kind: str = "mlp",
    lrs: Sequence[float] | None = None,
    cs: Sequence[float] | None = None,
    mlp_config: MLPConfig | None = None,
    n_bootstrap: int = 1000,
    chunk_s: float | None = None,
) -> Evaluation:
    """Score ``ctx.features`` with a frozen probe, once per seed in ``ctx.seeds``.

    ``kind`` is ``"mlp"`` (MARBLE-style MLP; ``lrs`` overrides the learning-rate grid of
    ``mlp_config``, default :class:`MLPConfig`) or ``"linear"`` (logistic regression; ``cs``
    overrides the ``C`` grid of :class:`LinearConfig`). Only
    clips with cached features take part. Returns test ``accuracy`` and ``macro_f1`` per seed,
    train ``accuracy`` per seed, ``chance``/``majority`` baselines, all in percent (0..100), and
    details with each seed's chosen layer, hyper-parameter and epoch, the per-layer validation
    curve, the test confusion matrix, and a bootstrap 95% CI of the first seed's test accuracy.
    Raises :class:`EmbenchError` for an empty split or a class without training clips.

    ``chunk_s`` (MLP only) adds chunk-level training: once the layer (or weighted sum) and the
    learning rate are chosen on clip means, the probe is trained again on ``chunk_s``-second
    chunks of every train clip (each labelled with its clip's class), early-stopped on
    validation accuracy of clip predictions (chunk probabilities averaged per clip), and
    scored the same way on test. Clips shorter than two chunks make it a no-op.
    """
    if kind not in PROBES:
        raise EmbenchError(f"Unknown probe {kind!r}; choose one of {sorted(PROBES)}.")
    if not ctx.seeds:
        raise EmbenchError("evaluate_classification needs at least one seed.")
    labels = _label_names(ctx)
    data = _split_data(ctx, labels)
    _check_splits(data, labels, ctx.clips.dataset_id)
    n_classes = len(labels)
    config = _probe_config(kind, lrs, cs, mlp_config)
    train, valid, test = data["train"], data["valid"], data["test"]
    scores: dict[str, list[float]] = {"accuracy": [], "macro_f1": []}
    train_acc: list[float] = []
    per_seed: list[dict[str, Any]] = []
    ci: dict[str, Any] = {}
    correct: list[list[float]] = []  # per seed, per test clip: 100 or 0 (accuracy's items)
    linear_fit: FittedProbe | None = None
    for i, seed in enumerate(ctx.seeds):
        if kind == "linear" and linear_fit is not None:
            probe = linear_fit  # lbfgs is deterministic: every seed would refit the same model
        else:
            probe = PROBES[kind](train.layers, train.y, valid.layers, valid.y, n_classes, seed,
                                 config)
            linear_fit = probe if kind == "linear" else None
        chunked = None
        if kind == "mlp" and chunk_s is not None:
            chunked = _chunk_stage(ctx.features, data, probe, config, n_classes, seed, chunk_s)
        if chunked is None:
            pred, train_pred = probe.predict(test.layers), probe.predict(train.layers)
        else:
            final, rows = chunked
            pred = final.predict(rows["test"][0], rows["test"][1])
            train_pred = final.predict(rows["train"][0], rows["train"][1])
        scores["accuracy"].append(_percent(test.y, pred))
        correct.append([100.0 if hit else 0.0 for hit in (test.y == pred).tolist()])
        scores["macro_f1"].append(_macro_f1(test.y, pred, n_classes))
        train_acc.append(_percent(train.y, train_pred))
        per_seed.append(_seed_details(seed, probe, _confusion(test.y, pred, n_classes)))
        if chunked is not None:
            per_seed[-1].update(selection_epoch=probe.epoch, epoch=final.epoch, chunk_s=chunk_s,
                                chunk_valid_accuracy=final.valid_accuracy * 100.0)
        if i == 0:
            low, high = bootstrap_ci(test.y, pred, _percent, n_resamples=n_bootstrap, seed=seed)
            ci = {"seed": seed, "low": low, "high": high, "n_resamples": n_bootstrap}
        ctx.log(
            f"{kind} probe seed {seed}: layer {probe.layer}, {probe.hparam_name} {probe.hparam:g}"
            f"{'' if probe.epoch is None else f', epoch {probe.epoch}'}, valid "
            f"{probe.valid_accuracy * 100:.1f}%, test {scores['accuracy'][-1]:.1f}%"
        )
    details = {
        "probe": kind,
        "units": "percent",
        "labels": list(labels),
        "n_clips": {s: len(d.y) for s, d in data.items()},
        "num_layers": len(train.layers),
        "seeds": per_seed,
        "test_accuracy_bootstrap_ci95": ci,
    }
    return Evaluation(
        scores=scores,
        train_scores={"accuracy": train_acc},
        baselines=classification_baselines(train.y, test.y, n_classes),
        details=details,
        item_scores=ItemScores(metric="accuracy", clip_ids=list(test.ids), values=correct),
    )


def _chunk_rows(features, ids: list[str], layers: list[int], chunk_frames: int
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """Per layer ``[rows, D]`` means of consecutive chunks of each clip's cached frames (a clip
    is split into ``round(frames / chunk_frames)`` near-equal chunks, at least one), and the
    row -> clip index map."""
    per_layer, groups = [], np.zeros(0, dtype=np.int64)
    for layer in layers:
        rows, owner = [], []
        for ci, frames in enumerate(features.frames(layer, ids)):
            n = max(1, round(len(frames) / chunk_frames))
            rows.extend(part.mean(axis=0) for part in np.array_split(frames, n))
            owner.extend([ci] * n)
        per_layer.append(np.stack(rows).astype(np.float32))
        groups = np.asarray(owner, dtype=np.int64)
    return per_layer, groups


def _chunk_stage(features, data: dict[str, _SplitData], probe: FittedProbe, config: MLPConfig,
                 n_classes: int, seed: int, chunk_s: float):
    """Retrain the chosen candidate on chunks; None when no clip has two chunks."""
    chunk_frames = max(1, round(chunk_s * features.cache.key.frame_rate))
    weighted = probe.layer == WEIGHTED_SUM
    layers = list(range(len(data["train"].layers))) if weighted else [int(probe.layer)]
    rows = {split: _chunk_rows(features, d.ids, layers, chunk_frames) for split, d in data.items()}
    if all(len(g) == len(data[s].ids) for s, (_, g) in rows.items()):
        return None
    (tr, tr_g), (va, va_g) = rows["train"], rows["valid"]
    cfg = replace(config, lrs=(probe.hparam,), weighted_sum=weighted, per_layer=not weighted)
    final = fit_mlp_probe(tr, data["train"].y[tr_g], va, data["valid"].y, n_classes, seed, cfg,
                          valid_groups=va_g)
    return final, rows
