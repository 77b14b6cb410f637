"""Frozen-probe protocol on cached embeddings at GTZAN scale (fault-filtered split sizes, 13
layers x 768, 10 classes, 3 seeds) on the CPU: the stacked MLP probe (every layer plus the
weighted sum trained in lock-step) against the same probe fitted one layer at a time, measured in
the same process. Run: ``python -m pytest benchmarks --benchmark-enable -s``."""

from __future__ import annotations

import time

import numpy as np

from embench.probes import MLPConfig, fit_mlp_probe

LAYERS, DIM, CLASSES, SEEDS = 13, 768, 10, (0, 1, 2)
SIZES = {"train": 443, "valid": 197}


def _features(seed: int = 0) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Class structure that grows with depth, so layers differ the way encoder layers do."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((LAYERS, CLASSES, DIM)).astype(np.float32)
    out = {}
    for split, n in SIZES.items():
        y = np.arange(n) % CLASSES
        layers = [(0.08 * (li + 1)) * centres[li][y] + rng.standard_normal((n, DIM), np.float32)
                  for li in range(LAYERS)]
        out[split] = (layers, y)
    return out


def _stacked(data, config):
    return [fit_mlp_probe(*data["train"], *data["valid"], CLASSES, s, config) for s in SEEDS]


def _one_layer_at_a_time(data, config):
    (tr, ytr), (va, yva) = data["train"], data["valid"]
    return [fit_mlp_probe([tr[i]], ytr, [va[i]], yva, CLASSES, s, config)
            for s in SEEDS for i in range(LAYERS)]


def test_stacked_probe_vs_one_layer_at_a_time(benchmark):
    data, config = _features(), MLPConfig()
    start = time.perf_counter()
    _one_layer_at_a_time(data, config)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    probes = benchmark.pedantic(_stacked, args=(data, config), rounds=1, iterations=1)
    stacked = time.perf_counter() - start
    assert len(probes) == len(SEEDS)
    benchmark.extra_info.update(baseline_s=baseline, stacked_s=stacked,
                                speedup=baseline / stacked)
    print(f"\nprobe, {LAYERS} layers + weighted sum, {len(SEEDS)} seeds: stacked {stacked:.1f} s, "
          f"one layer at a time (no weighted sum) {baseline:.1f} s, x{baseline / stacked:.1f}")


def test_gtzan_scale_protocol_with_chunks(benchmark, tmp_path):
    """The whole frozen protocol as the gtzan task runs it: 930 clips x 30 one-second frames,
    clip-level selection over 13 layers + weighted sum, then 5 s chunk training; 3 seeds."""
    from embench import Clip, ClipSet
    from embench.classification import evaluate_classification
    from tests.helpers_features import build_features, make_context

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((LAYERS, CLASSES, DIM)).astype(np.float32)
    clips, per_clip = [], {}
    for i in range(930):
        y = i % CLASSES
        split = "train" if i < 443 else "valid" if i < 640 else "test"
        clips.append(Clip(f"c{i}", tmp_path / "x.wav", f"g{y}", split))
        per_clip[f"c{i}"] = [
            (0.08 * (li + 1)) * centres[li][y] + rng.standard_normal((30, DIM), np.float32)
            for li in range(LAYERS)]
    clipset = ClipSet("gtzan-like", "s", clips, labels=tuple(f"g{k}" for k in range(CLASSES)))
    feats = build_features(tmp_path / "cache", per_clip, duration_s=30.0)
    ctx = make_context(clipset, feats, tmp_path, seeds=SEEDS, log=lambda m: None)
    start = time.perf_counter()
    ev = benchmark.pedantic(evaluate_classification, args=(ctx,), kwargs={"chunk_s": 5.0},
                            rounds=1, iterations=1)
    elapsed = time.perf_counter() - start
    assert len(ev.scores["accuracy"]) == len(SEEDS)
    benchmark.extra_info.update(seconds=elapsed)
    print(f"\nGTZAN-scale probe protocol, chunks of 5 s, {len(SEEDS)} seeds: {elapsed:.1f} s "
          f"(accuracy {np.mean(ev.scores['accuracy']):.1f})")
