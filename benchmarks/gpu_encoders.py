"""Encoder throughput on one GPU: embench's batched path vs a seed-style loop, same process.

For each encoder (real-size architecture, seeded random weights: no download), on 30 s clips:
- ``seed-style``: fp32, eager attention, one clip at a time (whole clip, or one window at a time
  for encoders with a hard context such as CLAP), no cache: how the seed notebook ran;
- ``embench``: ``embed_waveforms`` (windowing, equal-length batches, bf16 autocast, SDPA where
  the architecture has it, ``inference_mode``, pooling to 1 Hz) on clips already decoded;
- ``end-to-end`` (``--files``): ``extract`` from 22.05 kHz WAV files on disk (decode + resample
  in DataLoader workers, pinned memory, fp16 safetensors cache writes).
Also reports model FLOPs per audio-second (torch.utils.flop_counter), achieved TFLOP/s and peak
GPU memory. Usage: ``python benchmarks/gpu_encoders.py [--encoders a,b] [--clips 64]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CLIP_S = 30.0
BF16_DENSE_PEAK_TFLOPS = 989.0  # H100/H200 SXM spec sheet, dense bf16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clips(n: int, sample_rate: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [0.1 * torch.randn(int(CLIP_S * sample_rate), generator=gen) for _ in range(n)]


def _seed_style(encoder, clips: list[torch.Tensor], device: torch.device) -> float:
    """fp32, eager attention, one clip (or one window of a fixed-context model) at a time."""
    try:
        model = encoder.trainable_module()
    except TypeError:  # weight-free encoders (melspec) have no attention to switch
        model = None
    previous = model.config._attn_implementation if model is not None else None
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    window = encoder.info.window_s
    fixed_context = encoder.name.startswith("clap")
    pieces = int(CLIP_S // window) if fixed_context and window else 1
    step = len(clips[0]) // pieces
    with torch.inference_mode():
        encoder.forward(clips[0][None, :step].to(device))  # warm-up
        _sync(device)
        start = time.perf_counter()
        for clip in clips:
            for p in range(pieces):
                layers = encoder.forward(clip[None, p * step:(p + 1) * step].to(device))
                last = layers[-1] if isinstance(layers, (list, tuple)) else layers[:, -1]
                last.mean(dim=1).cpu()
        _sync(device)
    elapsed = time.perf_counter() - start
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(previous)
    return len(clips) * CLIP_S / elapsed


def _flops_per_audio_s(encoder, device: torch.device, batch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    info = encoder.info
    window_s = info.window_s or CLIP_S
    x = torch.zeros(batch, int(window_s * info.sample_rate), device=device)
    counter = FlopCounterMode(display=False)
    # no_grad, not inference_mode: weight-norm parametrisations fail under the flop counter
    # in inference mode
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16,
                                         enabled=device.type == "cuda"), counter:
        encoder.forward(x)
    return counter.get_total_flops() / (batch * window_s)


def _forward_only(encoder, batch: int, device: torch.device, repeats: int = 5) -> float:
    """The model alone on a device-resident batch of windows (no windowing, pooling, copies)."""
    info = encoder.info
    window_s = info.window_s or CLIP_S
    x = 0.1 * torch.randn(batch, int(window_s * info.sample_rate), device=device)
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16,
                                                enabled=device.type == "cuda"):
        encoder.forward(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            encoder.forward(x)
        _sync(device)
    return repeats * batch * window_s / (time.perf_counter() - start)


def _embench_path(encoder, clips, batch: int, device: torch.device) -> float:
    from embench.extract import embed_waveforms

    embed_waveforms(encoder, clips[:2], frame_rate=1.0, batch_size=batch)  # warm-up
    _sync(device)
    start = time.perf_counter()
    embed_waveforms(encoder, clips, frame_rate=1.0, batch_size=batch)
    _sync(device)
    return len(clips) * CLIP_S / (time.perf_counter() - start)


def _end_to_end(encoder, n: int, batch: int, device: torch.device, workers: int) -> float:
    import soundfile as sf

    from embench import Clip, ClipSet
    from embench.extract import extract

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        clips = []
        for i in range(n):
            path = Path(tmp) / f"clip{i:04d}.wav"
            sf.write(path, (0.1 * rng.standard_normal(int(CLIP_S * 22050))).astype(np.float32),
                     22050, subtype="PCM_16")
            clips.append(Clip(f"c{i}", path, "x", "train"))
        clipset = ClipSet("bench/wav", "none", clips)
        start = time.perf_counter()
        extract(encoder, clipset, Path(tmp) / "cache", device=device, batch_size=batch,
                num_workers=workers, weights="random", show_progress=False, log=lambda m: None)
        _sync(device)
        return n * CLIP_S / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoders", default="mert-v1-95m,mert-v1-330m,wav2vec2-base,clap-music")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--seed-clips", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64, help="windows per forward")
    parser.add_argument("--files", type=int, default=0, help="end-to-end from N WAV files")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()

    from embench.plugins import get_registry

    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{card}; torch {torch.__version__}; {CLIP_S:.0f} s clips; random-init weights")
    print("| encoder | seed-style audio-s/s | embench audio-s/s | x | end-to-end audio-s/s "
          "| forward only | GFLOP per audio-s | TFLOP/s | % bf16 peak | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.encoders.split(","):
        encoder = get_registry().encoder(name)
        t0 = time.perf_counter()
        encoder.load(device, "random")
        load_s = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        clips = _clips(args.clips, encoder.info.sample_rate)
        batch = args.batch // 2 if "330m" in name else args.batch
        fast = _embench_path(encoder, clips, batch, device)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0
        seed = _seed_style(encoder, clips[:args.seed_clips], device)
        flops = _flops_per_audio_s(encoder, device, min(batch, 8))
        e2e = _end_to_end(encoder, args.files, batch, device, args.workers) if args.files else 0
        fwd = _forward_only(encoder, batch, device)
        tflops = flops * fast / 1e12
        print(f"| {name} | {seed:,.0f} | {fast:,.0f} | {fast / seed:.1f} | "
              f"{f'{e2e:,.0f}' if e2e else '-'} | {fwd:,.0f} | {flops / 1e9:.1f} | {tflops:.0f} | "
              f"{100 * tflops / BF16_DENSE_PEAK_TFLOPS:.0f} | {peak:.1f} |  (load {load_s:.1f} s)",
              flush=True)
        encoder.unload()
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
