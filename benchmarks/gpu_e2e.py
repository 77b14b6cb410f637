"""Where end-to-end extraction time goes on a GPU: one encoder (MERT-95M unless ``--encoder``)
from 30 s WAV files at two dataset sizes (the difference gives the steady-state rate, the
intercept the fixed cost of a run) and with pipeline variants (``--no-variants`` skips them),
each printing extract's own breakdown of the main thread's time (and, where torch counts it,
how much the pinned host memory pool grew).

Run: ``python benchmarks/gpu_e2e.py [--files 1536] [--encoder clap-music]`` (``--quick``: CPU,
tiny, checks the script).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from benchmarks.bench_models import write_wavs  # noqa: E402
from benchmarks.gpu import CLIP_S, end_to_end  # noqa: E402


def run(encoder, clips, cache: Path, device, workers: int, label: str) -> float:
    rate = end_to_end(encoder, clips, cache, device, workers,
                      log=lambda m: print(f"  {label}: {m}", flush=True)
                      if "embedded" in m else None)
    print(f"{label}: {len(clips)} files {rate:,.0f} audio-s/s", flush=True)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1536)
    ap.add_argument("--encoder", default="mert-v1-95m")
    ap.add_argument("--no-variants", action="store_true",
                    help="only the two dataset sizes, not the pipeline variants")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    device = torch.device("cpu" if args.quick else "cuda")
    n = 3 if args.quick else args.files
    small = max(2, n // 3)
    workers = 1 if args.quick else max(1, (os.cpu_count() or 2) - 1)

    import embench.decoding as decoding
    import embench.extract as ex
    from embench.plugins import get_registry

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        parts = [(Path(tmp), 64, CLIP_S, 0, f"p{k}_") for k in range(-(-n // 64))]
        with ThreadPoolExecutor(8) as pool:
            files = [c for part in pool.map(lambda a: write_wavs(*a), parts)
                     for c in part.clips][:n]
        print(f"wrote {len(files)} files in {time.perf_counter() - t0:.0f} s", flush=True)
        enc = get_registry().encoder(args.encoder)
        enc.load(device, "random")
        root = Path(tmp)
        run(enc, files[:1 if args.quick else 4], root / "warm", device, workers, "warm-up")
        a = run(enc, files[:small], root / "small", device, workers, "default")
        b = run(enc, files, root / "all", device, workers, "default")
        t_a, t_b = small * CLIP_S / a, n * CLIP_S / b
        steady = (n - small) * CLIP_S / max(t_b - t_a, 1e-9)
        fixed = t_a - small * CLIP_S / steady
        print(f"{args.encoder}: steady state {steady:,.0f} audio-s/s; fixed cost {fixed:.2f} s "
              "per run", flush=True)
        if args.no_variants:
            return
        decoding.PIN_IN_THREADS = False
        run(enc, files, root / "nopin", device, workers, "no pinning in threads")
        decoding.PIN_IN_THREADS = True
        ex.BATCHES_PER_GROUP_CUDA = 8
        run(enc, files, root / "g8", device, workers, "groups of 8 batches")
        ex.BATCHES_PER_GROUP_CUDA = 4
        run(enc, files, root / "w2x", device, 2 * workers, f"{2 * workers} decode threads")
        budget, decoding.READ_AHEAD_BYTES = decoding.READ_AHEAD_BYTES, 2**62
        run(enc, files, root / "ahead2", device, workers, "read-ahead of two groups, no byte cap")
        decoding.READ_AHEAD_BYTES = budget


if __name__ == "__main__":
    main()
