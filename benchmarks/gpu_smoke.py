"""Check the CUDA path end to end on one GPU: melspec on toy-genres extracted on the CPU (fp32)
and on CUDA (bf16 autocast, pinned memory), embeddings compared layer by layer, timings and peak
GPU memory printed with the card's name, then the default ``embench run --device cuda``.

Usage: ``python benchmarks/gpu_smoke.py [--device cuda] [--workdir DIR]``. On a machine without
a GPU, ``--device cpu`` runs the same comparison CPU against CPU (a dry run of this script).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from embench.extract import extract
from embench_plugins.melspec import MelSpec
from embench_tasks.toy import ToyGenres


def _timed_extract(clips, root: Path, device: torch.device):
    start = time.perf_counter()
    feats = extract(MelSpec(), clips, root, device=device, num_workers=4, batch_size=32,
                    show_progress=False, log=lambda m: None)
    return feats, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="embench-gpu-"))
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}")

    clips = ToyGenres().load(work / "data")
    audio_s = 4.0 * len(clips)
    ref, t_cpu = _timed_extract(clips, work / "cache-cpu", torch.device("cpu"))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gpu, t_gpu = _timed_extract(clips, work / "cache-dev", device)
    print(f"extract {len(clips)} clips ({audio_s:.0f} audio-s): cpu {t_cpu:.2f} s "
          f"({audio_s / t_cpu:,.0f} audio-s/s), {device} {t_gpu:.2f} s "
          f"({audio_s / t_gpu:,.0f} audio-s/s incl. worker start-up)")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.1f} MiB")
    assert gpu.clip_ids == ref.clip_ids, "both devices must cache the same clips"
    for layer in range(ref.num_layers):
        a, b = ref.clip_means(layer), gpu.clip_means(layer)
        rel = np.abs(a - b).max() / max(np.abs(a).max(), 1e-9)
        print(f"layer {layer}: max |cpu - {device.type}| / max |cpu| = {rel:.2e}")
        assert np.isfinite(b).all(), f"non-finite embeddings on {device}"
        assert rel < 5e-2, f"layer {layer} differs too much between devices"

    out = work / "results"
    env_cmd = [sys.executable, "-m", "embench", "run", "--device", str(device), "--no-progress",
               "--data-dir", str(work / "data"), "--cache-dir", str(work / "cache-run"),
               "-o", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(env_cmd, capture_output=True, text=True)
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    print(f"embench run --device {device}: exit {proc.returncode} in "
          f"{time.perf_counter() - start:.1f} s")
    (result_file,) = out.glob("run-*.json")
    result = json.loads(result_file.read_text())
    print("provenance device:", result["provenance"]["device"])
    for r in result["results"]:
        s = r["summary"][r["main_score"]]
        print(f"{r['task']} {r['protocol']} {r['main_score']}: {s['mean']:.2f} "
              f"[{s['ci95_low']:.2f}, {s['ci95_high']:.2f}] compute "
              f"{r['preprocessing']['compute_dtype']}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
