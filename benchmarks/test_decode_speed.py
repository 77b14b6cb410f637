"""Turning a decoded 30 s clip into the encoder's input (``embench.audio.prepare_waveform``:
mono mix, finiteness check, resample) against the way it was done before, in the same process:
``mean(axis=1)`` even over a mono file's single column, and ``isfinite(...).all()`` over every
sample. GTZAN's files are mono 22.05 kHz; each decode thread does this once per clip, and on
the CPU those threads share the cores with the model. Run: ``python -m pytest benchmarks
--benchmark-enable -s``."""

from __future__ import annotations

import time

import numpy as np
import pytest

from embench.audio import prepare_waveform

REPEATS = 20


def _former(data: np.ndarray, native_sr: int, sample_rate: int) -> np.ndarray:
    if data.ndim == 2:
        data = data.mean(axis=1)
    if not np.isfinite(data).all():
        raise ValueError("non-finite")
    if native_sr != sample_rate:
        import soxr

        data = soxr.resample(data, native_sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(data, dtype=np.float32)


def _per_clip(fn) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(REPEATS):
        fn()
    return (time.perf_counter() - start) / REPEATS


@pytest.mark.parametrize(("channels", "rate"), [(1, 22050), (1, 24000), (2, 22050)],
                         ids=["mono-resampled", "mono-native-rate", "stereo-resampled"])
def test_prepare_waveform_vs_former(benchmark, channels, rate):
    rng = np.random.default_rng(0)
    data = (0.1 * rng.standard_normal((30 * rate, channels))).astype(np.float32)
    now = prepare_waveform(data, rate, 24000, "bench")
    np.testing.assert_array_equal(now, _former(data, rate, 24000))
    old_s = _per_clip(lambda: _former(data, rate, 24000))
    new_s = benchmark.pedantic(_per_clip, args=(lambda: prepare_waveform(data, rate, 24000,
                                                                         "bench"),),
                               rounds=1, iterations=1)
    benchmark.extra_info.update(baseline_ms=1e3 * old_s, prepare_ms=1e3 * new_s,
                                speedup=old_s / new_s)
    print(f"\n30 s, {channels} channel(s) at {rate} Hz -> 24 kHz mono: {1e3 * new_s:.2f} ms, "
          f"before {1e3 * old_s:.2f} ms, x{old_s / new_s:.2f}")
