"""Where end-to-end extraction time goes on a GPU: one encoder (MERT-95M unless ``--encoder``)
from 30 s WAV files at two dataset sizes (the difference gives the steady-state rate, the
intercept the fixed cost of a run) and with pipeline variants (``--no-variants`` skips them):

- one cache writer instead of :data:`embench.extract.CACHE_WRITERS`;
- the writer scanning every array for NaN/inf, as it did before the device flagged them
  (:meth:`embench.windowing.PooledBatch.nonfinite_clips`), and both, the former writer;
- Python's GIL switch interval at 1 ms instead of 5 (how long a decode or writer thread may
  wait for the GIL while the main thread launches kernels: 13,889 and 13,119 audio-s/s against
  12,920 and 12,649 by default, H200, one run on each of two machines);
- half the decode threads (fewer threads asking the main thread for the GIL).

Each run prints extract's own breakdown of the main thread's time (and, where torch counts
it, how much the pinned host memory pool grew).
Variants measured once and dropped (H200, 1,536 files, against 9,700 audio-s/s by default):
groups of 8 batches 7,359; twice the decode threads 7,861; two groups read ahead with no byte
cap 9,074; the clips pinned by the main thread instead of the decode threads 8,327 (and
12,046 against 12,920 in a later session).

The pinned pool grows by ``cudaHostRegister`` unless ``PYTORCH_CUDA_ALLOC_CONF`` says
otherwise (:func:`embench.decoding.use_host_register`); ``gpu_session.sh``'s
``*-hostalloc`` steps set ``pinned_use_cuda_host_register:False`` for the baseline. Its
cost shows in the first run of a process only: later runs reuse the pool.

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
from benchmarks.bench_models import scan_then_write, write_wavs  # noqa: E402
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
        writers, ex.CACHE_WRITERS = ex.CACHE_WRITERS, 1
        run(enc, files, root / "w1", device, workers, "one cache writer")
        ex.CACHE_WRITERS = writers
        write, ex._write_shard = ex._write_shard, scan_then_write
        run(enc, files, root / "scan", device, workers, "finiteness scanned in the writer")
        ex.CACHE_WRITERS = 1
        run(enc, files, root / "before", device, workers,
            "one writer scanning finiteness (as before)")
        ex._write_shard, ex.CACHE_WRITERS = write, writers
        interval = sys.getswitchinterval()
        sys.setswitchinterval(0.001)
        run(enc, files, root / "gil1ms", device, workers, "GIL switch interval 1 ms")
        sys.setswitchinterval(interval)
        half = max(1, workers // 2)
        run(enc, files, root / "half", device, half, f"{half} decode threads")

if __name__ == "__main__":
    main()
