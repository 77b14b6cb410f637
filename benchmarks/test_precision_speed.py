"""``--precision bf16`` against ``fp32`` on the CPU: end-to-end extraction from WAV files of the
real-size wav2vec2-style encoders, as a ratio measured in the same process, with the cosine
similarity of the two runs' pooled embeddings beside it.

Why on the CPU: ``auto`` means fp32 there (the reference arithmetic, and CPUs without native
bf16 run it far slower), but CPUs with AVX512-BF16 or AMX run bf16 matrix products natively, so
a user of such a machine can choose ``--precision bf16``. The ratio says what that buys here;
the machine's support is recorded (:func:`embench.precision.native_bf16_cpu`).

The two precisions alternate round by round; ratios are medians of per-round ratios.
Run: ``python -m pytest benchmarks/test_precision_speed.py -m slow --benchmark-enable -s``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
from bench_models import CPU, make_encoder, write_wavs

from embench.extract import extract
from embench.precision import native_bf16_cpu as _bf16_native

CLIP_S = 30.0


@pytest.mark.slow
@pytest.mark.parametrize(("family", "n_clips", "rounds"),
                         [("mert", 2, 2), ("wav2vec2", 2, 2)], ids=["mert-v1-95m", "wav2vec2-base"])
def test_bf16_weights_vs_fp32_on_the_cpu(benchmark, tmp_path, family, n_clips, rounds):
    encoder = make_encoder(family, "real")
    dataset = write_wavs(tmp_path / "wav", n_clips, CLIP_S)
    rounds = 1 if benchmark.disabled else rounds
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    features = {}

    def run(precision: str) -> None:
        start = time.perf_counter()
        features[precision] = extract(
            encoder, dataset, tmp_path / f"cache-{precision}-{len(rates[precision])}",
            device=CPU, weights="random", show_progress=False, log=lambda m: None,
            precision=precision)
        rates[precision].append(n_clips * CLIP_S / (time.perf_counter() - start))

    benchmark.pedantic(lambda: run("bf16"), setup=lambda: run("fp32"), rounds=rounds,
                       iterations=1)
    ratio = statistics.median(b / f for b, f in zip(rates["bf16"], rates["fp32"], strict=True))
    a = np.concatenate(features["fp32"].frames(encoder.info.num_layers - 1))
    b = np.concatenate(features["bf16"].frames(encoder.info.num_layers - 1))
    cosine = float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1)
                    / np.linalg.norm(b, axis=-1)).min())
    assert features["bf16"].cache.key.compute_dtype == "bf16"
    assert cosine > 0.99  # a sanity check on random weights, not a quality claim
    benchmark.extra_info.update(
        encoder=encoder.info.name, clips=n_clips, clip_s=CLIP_S, rounds=rounds,
        native_bf16=_bf16_native(), fp32_audio_s_per_s=statistics.median(rates["fp32"]),
        bf16_audio_s_per_s=statistics.median(rates["bf16"]), speedup=ratio,
        worst_last_layer_cosine=cosine, per_round=rates)
    print(f"\nprecision {encoder.info.name}, {n_clips} x {CLIP_S:g} s end to end, {rounds} "
          f"round(s), native bf16 {_bf16_native()}: fp32 "
          f"{statistics.median(rates['fp32']):,.1f} audio-s/s, bf16 weights "
          f"{statistics.median(rates['bf16']):,.1f} (x{ratio:.2f}); worst last-layer cosine "
          f"{cosine:.5f}")
