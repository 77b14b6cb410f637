"""Cached re-run vs first run of extraction (melspec on toy-genres), as a ratio measured in the
same process. Run: ``python -m pytest benchmarks --benchmark-enable``."""

from __future__ import annotations

import shutil
import statistics
import time

import torch

from embench.extract import extract
from embench_plugins.melspec import MelSpec
from embench_tasks.toy import ToyGenres


def _extract(clips, cache_root):
    return extract(MelSpec(), clips, cache_root, device=torch.device("cpu"), num_workers=1,
                   show_progress=False, log=lambda m: None)


def test_cached_rerun_vs_first_run(benchmark, tmp_path):
    clips = ToyGenres().load(tmp_path / "data")
    first_runs = []
    for i in range(3):
        root = tmp_path / f"cold{i}"
        start = time.perf_counter()
        _extract(clips, root)
        first_runs.append(time.perf_counter() - start)
        if i:
            shutil.rmtree(root)
    warm = tmp_path / "cold0"
    feats = benchmark.pedantic(_extract, args=(clips, warm), rounds=5, iterations=1)
    assert len(feats.clip_ids) == len(clips)
    cold = statistics.median(first_runs)
    cached = benchmark.stats.stats.median if benchmark.stats else cold
    benchmark.extra_info.update(first_run_s=cold, cached_run_s=cached,
                                speedup=cold / cached if cached else None)
    print(f"\nfirst run {cold:.3f} s, cached re-run {cached:.3f} s, "
          f"speed-up x{cold / cached:.1f}")
