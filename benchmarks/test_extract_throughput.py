"""Extraction throughput on the CPU (audio-seconds per second) of each encoder family, embench's
path against the seed notebook's loop, as ratios measured in the same process.

Per encoder (random weights, built in place: no download), on white-noise clips of 30 s:
- ``seed-style`` (:func:`seed_style.seed_style_throughput`): fp32, eager attention, one clip at
  a time (CLAP: one 10 s window at a time), no batching, no cache, audio already decoded;
- ``embench``: ``embed_waveforms`` on the same decoded clips (windows, equal-length batches of
  16, ``inference_mode``, pooling of every layer to 1 Hz, fp16 arrays);
- ``end-to-end``: ``extract`` from 22.05 kHz WAV files into an empty cache (decode + resample
  off the main thread, fp16 safetensors shards), default ``num_workers``, batch size 16 (what
  ``auto`` means on the CPU). On a 2-core machine that is 1 decode worker, and ``extract``
  then gives the model one torch thread.

Sizes: ``tiny`` is the tiny test architecture of each family (16 clips, medians of 3 rounds);
``real`` the published architecture (``-m slow``, one round): MERT-v1-95M, wav2vec2-base and
clap-music on 3 clips, MERT-v1-330M on 1 clip (1.3-2.6 audio-s/s on 2 cores: one 30 s clip
already costs about a minute over the three paths). ``melspec`` has no weights: one size, 16
clips, 3 rounds, not slow.

Warm-up: one window (the whole clip for melspec) before each timed path. The three paths
alternate round by round and ratios are medians of per-round ratios; the 1-minute load average
before and after is recorded. Run on an idle machine all the same: a second busy process on
2 cores slows the seed loop's many small ops far more than embench's batches (10x against 1.2x
seen here), so ratios from a shared machine are inflated.

Run: ``python -m pytest benchmarks/test_extract_throughput.py --benchmark-enable -s
[-m slow]``; with pytest-benchmark disabled (the default) every path runs once, as a smoke test.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
from bench_models import CPU, make_encoder, noise_clips, write_wavs
from seed_style import seed_style_throughput

from embench.extract import embed_waveforms, extract

CLIP_S = 30.0
BATCH = 16
slow = pytest.mark.slow

CASES = [
    # family, size, clips, rounds
    pytest.param("melspec", "real", 16, 3, id="melspec"),
    pytest.param("mert", "tiny", 16, 3, id="mert-tiny"),
    pytest.param("wav2vec2", "tiny", 16, 3, id="wav2vec2-tiny"),
    pytest.param("clap", "tiny", 16, 3, id="clap-tiny"),
    pytest.param("mert", "real", 3, 1, id="mert-v1-95m", marks=slow),
    pytest.param("mert-330m", "real", 1, 1, id="mert-v1-330m", marks=slow),
    pytest.param("wav2vec2", "real", 3, 1, id="wav2vec2-base", marks=slow),
    pytest.param("clap", "real", 3, 1, id="clap-music", marks=slow),
]


@pytest.mark.parametrize(("family", "size", "n_clips", "rounds"), CASES)
def test_extraction_throughput(benchmark, tmp_path, family, size, n_clips, rounds):
    load_before = os.getloadavg()[0]
    encoder = make_encoder(family, size)
    encoder.load(CPU, "random")
    info = encoder.info
    clips = noise_clips(n_clips, CLIP_S, info.sample_rate)
    audio_s = n_clips * CLIP_S
    dataset = write_wavs(tmp_path / "wav", n_clips, CLIP_S)
    warm = clips[0][:int((info.window_s or CLIP_S) * info.sample_rate)]
    embed_waveforms(encoder, [warm], 1.0, BATCH)
    rounds = 1 if benchmark.disabled else rounds
    seed, fast, e2e = [], [], []  # audio-s/s per round; the three paths alternate

    def seed_and_end_to_end():  # pedantic's untimed setup, before every round
        seed.append(seed_style_throughput(encoder, clips, CPU, warmup=warm))
        start = time.perf_counter()
        feats = extract(encoder, dataset, tmp_path / f"cache{len(e2e)}", device=CPU,
                        batch_size=BATCH, weights="random", show_progress=False,
                        log=lambda m: None)
        e2e.append(audio_s / (time.perf_counter() - start))
        assert len(feats.clip_ids) == n_clips

    def embench_path():
        start = time.perf_counter()
        out = embed_waveforms(encoder, clips, 1.0, BATCH)
        fast.append(audio_s / (time.perf_counter() - start))
        return out

    pooled = benchmark.pedantic(embench_path, setup=seed_and_end_to_end, rounds=rounds,
                                iterations=1)
    assert len(pooled) == n_clips and len(pooled[0]) == info.num_layers
    ratio = statistics.median(f / s for f, s in zip(fast, seed, strict=True))
    ratio_e2e = statistics.median(e / s for e, s in zip(e2e, seed, strict=True))
    seed_m, fast_m, e2e_m = (statistics.median(x) for x in (seed, fast, e2e))
    load_after = os.getloadavg()[0]
    name = info.name if size == "real" else f"{info.name} (tiny)"
    benchmark.extra_info.update(
        encoder=name, size=size, clips=n_clips, clip_s=CLIP_S, rounds=rounds,
        seed_style_audio_s_per_s=seed_m, embench_audio_s_per_s=fast_m,
        end_to_end_audio_s_per_s=e2e_m, speedup=ratio, end_to_end_speedup=ratio_e2e,
        per_round={"seed_style": seed, "embench": fast, "end_to_end": e2e},
        loadavg_1min=(load_before, load_after))
    print(f"\nthroughput {name}, {n_clips} x {CLIP_S:g} s, {rounds} round(s): seed-style "
          f"{seed_m:,.1f} audio-s/s, embench {fast_m:,.1f} (x{ratio:.2f}), end to end from WAV "
          f"{e2e_m:,.1f} (x{ratio_e2e:.2f}); load {load_before:.1f}/{load_after:.1f}")
