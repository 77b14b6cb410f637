"""The frozen-probe protocol end to end against the seed notebook's training loop, on the CPU,
as a ratio of wall-clock times measured in the same process.

- embench: ``extract`` once (decode + resample off the main thread, batched forward, 1 Hz
  pooling, fp16 cache; its defaults: batch size ``auto``, default workers), then
  ``evaluate_classification`` (MLP probe over every layer and the weighted sum, two learning
  rates, early stopping on validation) for 3 seeds;
- seed-style (:func:`seed_style.seed_style_protocol`): a linear head on the last layer's mean,
  Adam, 10 epochs, the frozen encoder run again on every batch of every epoch, 3 seeds.

Data: ``toy-genres`` (synthetic, 6 classes, 4 s clips at 16 kHz, 60/20/20 split), generated
offline. ``mert-tiny`` (not slow): the tiny test MERT on 10 clips per genre. ``mert-real``
(``-m slow``): real-size MERT-v1-95M (random weights) on 5 clips per genre cut to their first
second, which keeps the seed loop (30 encoder passes over the train clips) near 1.5 minutes
on 2 cores. Accuracies are printed for context only: the weights are random.

Run: ``python -m pytest benchmarks/test_probe_protocol.py --benchmark-enable -s [-m slow]``.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from bench_models import CPU, make_encoder
from seed_style import seed_style_protocol

from embench import EvalContext, evaluate_classification
from embench.extract import extract
from embench_tasks.toy import ToyGenres

SEEDS = (0, 1, 2)
EPOCHS = 10

CASES = [
    pytest.param("mert", "tiny", 10, None, id="mert-tiny"),
    pytest.param("mert", "real", 5, 1.0, id="mert-real", marks=pytest.mark.slow),
]


def _clips(root, per_genre: int, crop_s: float | None):
    clips = ToyGenres(clips_per_genre=per_genre).load(root)
    if crop_s is not None:
        clips = replace(clips, clips=[replace(c, end_s=crop_s) for c in clips],
                        dataset_id=f"{clips.dataset_id}-first-{crop_s:g}s")
    return clips


@pytest.mark.parametrize(("family", "size", "per_genre", "crop_s"), CASES)
def test_frozen_probe_vs_seed_loop(benchmark, tmp_path, family, size, per_genre, crop_s):
    clips = _clips(tmp_path / "data", per_genre, crop_s)
    encoder = make_encoder(family, size)
    encoder.load(CPU, "random")
    audio_s = sum((c.end_s or 4.0) for c in clips)

    start = time.perf_counter()
    seed = seed_style_protocol(encoder, clips, SEEDS, epochs=EPOCHS)
    seed_s = time.perf_counter() - start

    parts: dict[str, float] = {}

    def embench_protocol():
        t0 = time.perf_counter()
        feats = extract(encoder, clips, tmp_path / f"cache{len(parts)}", device=CPU,
                        weights="random", show_progress=False, log=lambda m: None)
        t1 = time.perf_counter()
        ctx = EvalContext(clips=clips, protocol="probe", seeds=list(SEEDS), device=CPU,
                          output_dir=tmp_path / "out", features=feats, log=lambda m: None)
        ev = evaluate_classification(ctx)
        parts.update(extract_s=t1 - t0, probe_s=time.perf_counter() - t1)
        return ev

    start = time.perf_counter()
    ev = benchmark.pedantic(embench_protocol, rounds=1, iterations=1)
    embench_s = time.perf_counter() - start
    assert len(ev.scores["accuracy"]) == len(SEEDS) == len(seed["accuracy"])

    name = f"{family}-{size}"
    benchmark.extra_info.update(
        encoder=name, clips=len(clips), audio_s=audio_s, seeds=len(SEEDS), seed_epochs=EPOCHS,
        seed_style_s=seed_s, embench_s=embench_s, speedup=seed_s / embench_s, **parts,
        embench_accuracy=float(np.mean(ev.scores["accuracy"])),
        seed_style_accuracy=float(np.mean(seed["accuracy"])))
    print(f"\nprobe protocol {name}, {len(clips)} clips ({audio_s:.0f} audio-s), "
          f"{len(SEEDS)} seeds: embench {embench_s:.1f} s (extract {parts['extract_s']:.1f} s "
          f"+ probe {parts['probe_s']:.1f} s), seed-style loop ({EPOCHS} epochs) "
          f"{seed_s:.1f} s, x{seed_s / embench_s:.1f}; test accuracy "
          f"{np.mean(ev.scores['accuracy']):.1f} vs {np.mean(seed['accuracy']):.1f}")
