"""Where one GPU's time goes when embench embeds audio: a diagnostic, not a benchmark.

For MERT-95M (real size, random init) it times the forward pass under bf16 autocast with the
convolutions as cuDNN runs them, with the positional conv and then every conv as unfold + GEMM,
and with the positional conv by FFT (``embench_plugins.fast_conv``, the default), and then
with bf16 weights (the default precision) with the module's CNN and with the GEMM feature
encoder (``embench_plugins.gemm_features``), printing the top CUDA kernels (torch.profiler) of
each; optionally tries ``torch.compile``; times the pooling of 13 layers onto the 1 Hz grid;
and measures how fast the decode threads alone decode and resample 30 s WAV files.
``--quick`` runs it on the CPU with a tiny batch (to check the script before spending GPU time).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from embench.plugins import get_registry


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps=5, warm=2) -> float:
    for _ in range(warm):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / reps


def top_kernels(fn, device, rows=12) -> None:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    _sync(device)
    with profile(activities=acts) as prof:
        fn()
        _sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60),
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--files", type=int, default=256)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = torch.device("cpu" if args.quick else "cuda")
    batches = (2,) if args.quick else (128, 256)
    reps = 1 if args.quick else 5
    t0 = time.perf_counter()
    enc = get_registry().encoder("mert-v1-95m")
    enc.load(device, "random")
    sr, win = enc.info.sample_rate, int(enc.info.window_s * enc.info.sample_rate)
    print(f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'} torch "
          f"{torch.__version__}; load {time.perf_counter() - t0:.1f}s", flush=True)

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        enc.forward(torch.zeros(1, win, device=device))
    flops_per_s = counter.get_total_flops() / enc.info.window_s
    print(f"GFLOP per audio-s {flops_per_s / 1e9:.2f}", flush=True)

    def report(label, b, sec):
        aps = b * enc.info.window_s / sec
        print(f"{label:28s} B={b:4d} {aps:9,.0f} audio-s/s  {flops_per_s * aps / 1e12:6.1f} "
              f"TFLOP/s", flush=True)

    ac = torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")
    # the convolution routes of plugins/fast_conv.py, the default (fft) last: its kernels follow
    for which in ("off", "pos", "all", "fft"):
        os.environ["EMBENCH_UNFOLD_CONV"] = which
        enc.unload()
        enc.load(device, "random")
        for b in batches:
            x = 0.1 * torch.randn(b, win, device=device)
            with torch.inference_mode(), ac:
                report(f"autocast conv={which}", b,
                       timed(lambda x=x: enc.forward(x), device, reps))
    del os.environ["EMBENCH_UNFOLD_CONV"]
    x = 0.1 * torch.randn(batches[-1], win, device=device)
    with torch.inference_mode(), ac:
        top_kernels(lambda: enc.forward(x), device)

    # the default precision on CUDA (bf16 weights, no autocast), with the module's CNN
    # convolutions and with the GEMM feature encoder: timings and where the kernels' time goes
    from embench import precision as precisions

    precision = "bf16" if device.type == "cuda" else "fp32"
    for cnn in ("module", "gemm"):
        os.environ["EMBENCH_FEATURE_ENCODER"] = cnn
        enc.unload()
        precisions.prepare(enc, precision, device, "random", None)
        x = 0.1 * torch.randn(batches[-1], win, device=device)
        with torch.inference_mode():
            report(f"{precision} weights CNN={cnn}", batches[-1],
                   timed(lambda x=x: enc.forward(x), device, reps))
            top_kernels(lambda x=x: enc.forward(x), device)
    del os.environ["EMBENCH_FEATURE_ENCODER"]

    # pooling 13 layers of one batch onto the 1 Hz grid (current FramePooler)
    from embench.windowing import FramePooler

    b = batches[-1] // 2 or 1
    frames = [torch.randn(b, 374, 768, device=device, dtype=torch.bfloat16) for _ in range(13)]

    def pool():
        p = FramePooler([5.0] * b, 1.0, 13)
        w = p.windows(list(range(b)), [0.0] * b, [5.0] * b, device)
        for i, f in enumerate(frames):
            p.add(i, w, f)
        return p

    print(f"pool 13 layers B={b}: {1000 * timed(pool, device, reps):.2f} ms", flush=True)
    print(f"stack 13 layers fp32 B={b}: "
          f"{1000 * timed(lambda: torch.stack(frames, 1).float(), device, reps):.2f} ms",
          flush=True)

    if args.compile and device.type == "cuda":
        t0 = time.perf_counter()
        cm = torch.compile(enc.model)
        x = 0.1 * torch.randn(128, win, device=device, dtype=torch.bfloat16)
        with torch.inference_mode():
            cm(x, output_hidden_states=True)
            _sync(device)
            print(f"compile {time.perf_counter() - t0:.1f}s", flush=True)
            report("pure bf16 compiled", 128,
                   timed(lambda: cm(x, output_hidden_states=True), device, reps))

    # decode + resample alone (DataLoader workers, pinned)
    import soundfile as sf

    from embench import Clip

    n = 8 if args.quick else args.files
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        clips = []
        for i in range(n):
            p = Path(tmp) / f"c{i}.wav"
            sf.write(p, (0.1 * rng.standard_normal(30 * 22050)).astype(np.float32), 22050,
                     subtype="PCM_16")
            clips.append(Clip(f"c{i}", p, "x", "train"))
        from embench.decoding import decoded_clips

        for workers in (1,) if args.quick else (8, 15):
            start = time.perf_counter()
            total = sum(len(a) for _, a, _ in decoded_clips(clips, sr, workers,
                                                            device.type == "cuda"))
            rate = total / sr / (time.perf_counter() - start)
            print(f"decode threads={workers}: {rate:,.0f} audio-s/s (cpus {os.cpu_count()})",
                  flush=True)


if __name__ == "__main__":
    main()
