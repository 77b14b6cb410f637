"""Child process of ``test_peak_rss.py``: extract the first ``--n`` WAV files of a folder into a
fresh cache and print one JSON line with the peak memory of this process and of its DataLoader
workers. Run in a fresh interpreter so that nothing measured was allocated by someone else.

Two measures:
- exact per-process peaks from the kernel: this process's ``VmHWM`` (its high-water RSS) and
  ``ru_maxrss`` of the largest reaped child (``RUSAGE_CHILDREN``: the workers, joined when
  extraction ends). Not ``RUSAGE_SELF``: Linux carries ``ru_maxrss`` across ``exec``, so a child
  started by a 1 GB pytest process would report the parent's 1 GB (``VmHWM`` is per address
  space and starts afresh at ``exec``);
- a sampled peak of the whole tree (every ``--interval`` s): RSS of this process, RSS summed
  over live workers, and PSS summed over all of them. PSS splits pages shared after ``fork``
  between the processes sharing them, so the PSS sum is the tree's real footprint, where an RSS
  sum would count torch's libraries once per worker.

Usage: ``python benchmarks/rss_child.py --wav-dir DIR --n 100 --cache DIR [--encoder melspec]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # bench_models; the repo checkout


def _kb_field(path: str, field: str) -> float:
    """``field`` of a /proc status-like file, in MiB (0 when the process is gone)."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    kids.extend(int(k) for k in fh.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return kids


class TreeSampler(threading.Thread):
    """Polls this process and its descendants; keeps the peaks (MiB)."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.stop_flag = interval, threading.Event()
        self.peak = {"self_rss": 0.0, "workers_rss": 0.0, "tree_pss": 0.0, "tree_rss": 0.0}
        self.workers_seen: set[int] = set()
        self.samples = 0

    def sample(self) -> None:
        me = os.getpid()
        tree, stack = [], _children(me)
        while stack:
            pid = stack.pop()
            tree.append(pid)
            stack.extend(_children(pid))
        self.workers_seen.update(tree)
        self_rss = _kb_field("/proc/self/status", "VmRSS")
        workers_rss = sum(_kb_field(f"/proc/{p}/status", "VmRSS") for p in tree)
        pss = sum(_kb_field(f"/proc/{p}/smaps_rollup", "Pss") for p in [me, *tree])
        now = {"self_rss": self_rss, "workers_rss": workers_rss, "tree_pss": pss,
               "tree_rss": self_rss + workers_rss}
        for key, value in now.items():
            self.peak[key] = max(self.peak[key], value)
        self.samples += 1

    def run(self) -> None:
        while not self.stop_flag.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.stop_flag.set()
        self.join()
        self.sample()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wav-dir", type=Path, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--encoder", default="melspec", help="melspec or mert-tiny")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()

    import torch
    from bench_models import make_encoder

    from embench import Clip, ClipSet
    from embench.extract import extract

    family, _, size = args.encoder.partition("-")
    encoder = make_encoder(family, size or "real")
    files = sorted(args.wav_dir.glob("*.wav"))[:args.n]
    if len(files) < args.n:
        raise SystemExit(f"{args.wav_dir} holds {len(files)} WAV files, {args.n} asked for")
    clips = ClipSet(f"bench/rss-{args.n}", "none",
                    [Clip(f.stem, f, "x", "train") for f in files])
    before = _kb_field("/proc/self/status", "VmRSS")
    sampler = TreeSampler(args.interval)
    sampler.start()
    start = time.perf_counter()
    feats = extract(encoder, clips, args.cache, device=torch.device("cpu"),
                    batch_size=args.batch_size, num_workers=args.workers, weights="random",
                    show_progress=False, log=lambda m: None)
    seconds = time.perf_counter() - start
    sampler.stop()
    if len(feats.clip_ids) != args.n:
        raise SystemExit(f"extracted {len(feats.clip_ids)} of {args.n} clips: {feats.skipped}")
    mib = 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps({
        "clips": args.n, "encoder": args.encoder, "workers": args.workers, "seconds": seconds,
        "rss_before_extract_mb": before,
        "hwm_self_mb": _kb_field("/proc/self/status", "VmHWM"),
        "maxrss_workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / mib,
        "peak_self_rss_mb": sampler.peak["self_rss"],
        "peak_workers_rss_mb": sampler.peak["workers_rss"],
        "peak_tree_rss_mb": sampler.peak["tree_rss"],
        "peak_tree_pss_mb": sampler.peak["tree_pss"],
        "workers_seen": len(sampler.workers_seen), "samples": sampler.samples,
    }))


if __name__ == "__main__":
    main()
