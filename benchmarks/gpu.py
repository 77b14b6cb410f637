"""embench's extraction speed on one GPU, each figure beside its baseline from the same run.

For MERT-95M, MERT-330M, wav2vec2-base and CLAP at real size (seeded random weights, so no
download) on 30 s clips stored as 22.05 kHz 16-bit WAV files (GTZAN's format), it reports:

- **end to end**: ``embench.extract`` from the files (decode + resample in threads, windowing,
  the default precision: bf16 weights for MERT and wav2vec2, bf16 autocast for CLAP; pooling to
  1 Hz, fp16 safetensors cache writes), batch size ``auto``, after a short warm-up run on other
  files (cuDNN plans, the batch-size probe);
- **in memory**: the same path on clips already decoded (no files, no cache);
- **forward only**: the model alone on a device-resident batch of windows;
- **seed-style**: fp32 weights, eager attention, one clip at a time, no cache
  (``seed_style.py``);
- model GFLOP per audio-second (``torch.utils.flop_counter``'s formulas over the ops
  ``roofline.py`` records for one batch, pooling included), achieved TFLOP/s of the end-to-end
  figure and its fraction of the card's dense bf16 peak, and peak GPU memory;
- the eager floor (``roofline.py``: every op of one batch recorded on this card, each at the
  slower of the measured matrix rate and copy bandwidth of an H100/H200) and the forward-only
  figure as a share of it: how far the kernels are from what their op graph allows.

Run: ``python benchmarks/gpu.py`` (about 3-4 minutes on an H100/H200; ``--quick`` checks the
script on the CPU with tiny inputs). The files sit in the page cache, as on a second epoch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from benchmarks.bench_models import WAV_RATE as FILE_SR  # noqa: E402
from benchmarks.bench_models import write_wavs  # noqa: E402
from benchmarks.roofline import CARDS, card_ceilings, floor_audio_s, record  # noqa: E402
from benchmarks.seed_style import seed_style_throughput  # noqa: E402

CLIP_S = 30.0
#: Dense bf16 tensor-core peaks from the vendors' spec sheets (SXM parts), TFLOP/s.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def peak_tflops(card: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in card:
            return value
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def end_to_end(encoder, clips, cache: Path, device, workers: int, precision: str = "auto",
               log=lambda m: None) -> float:
    """audio-s/s of ``extract`` from the WAV files ``clips`` into the empty folder ``cache``."""
    from embench import ClipSet
    from embench.extract import extract

    clipset = ClipSet(f"bench/{cache.name}", "none", clips)
    _sync(device)
    start = time.perf_counter()
    extract(encoder, clipset, cache, device=device, batch_size="auto", num_workers=workers,
            weights="random", show_progress=False, log=log, precision=precision)
    _sync(device)
    return len(clips) * CLIP_S / (time.perf_counter() - start)


def noise_clips(n: int, sample_rate: int, device: torch.device) -> list[torch.Tensor]:
    """``n`` seeded 30 s noise clips, pinned for asynchronous copies when the device is CUDA."""
    gen = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(int(CLIP_S * sample_rate), generator=gen) for _ in range(n)]
    return [w.pin_memory() for w in waves] if device.type == "cuda" else waves


def in_memory(encoder, waves, device, precision: str | None = None, forward=None):
    """audio-s/s of ``embed_group`` over decoded ``waves``, the batch size ``auto`` chose, and
    the pooled embeddings of the first four clips (the warm-up). A second warm-up pass over the
    first 64 clips meets the loop's batch shapes first, so that their one-off costs (cuDNN
    plans, Triton autotuning, ``auto`` route timing, compiles) stay out of the rate; the
    end-to-end runs include them. ``forward``: the encoder's by default (a compiled one)."""
    from embench.batching import BatchSizer
    from embench.extract import embed_group

    sizer = BatchSizer("auto", device, log=lambda m: None, precision=precision)
    first = embed_group(encoder, waves[:4], 1.0, sizer, forward).wait()  # warm-up + probe
    embed_group(encoder, waves[:64], 1.0, sizer, forward).wait()  # the loop's shapes, warm
    _sync(device)
    start = time.perf_counter()
    for i in range(0, len(waves), 64):
        embed_group(encoder, waves[i:i + 64], 1.0, sizer, forward).wait()
    _sync(device)
    return len(waves) * CLIP_S / (time.perf_counter() - start), sizer.size, first


def forward_only(encoder, batch: int, device, repeats: int = 5,
                 precision: str | None = None, forward=None) -> float:
    from embench import precision as precisions

    forward = forward or encoder.forward
    info = encoder.info
    window_s = info.window_s or CLIP_S
    x = 0.1 * torch.randn(batch, int(window_s * info.sample_rate), device=device)
    context = precisions.context(precision or precisions.default_for(device), device)
    with torch.inference_mode(), context:
        forward(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            forward(x)
        _sync(device)
    return repeats * batch * window_s / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="mert-v1-95m,mert-v1-330m,wav2vec2-base,clap-music")
    parser.add_argument("--files", type=int, default=768, help="30 s WAV files, end to end")
    parser.add_argument("--memory-clips", type=int, default=256)
    parser.add_argument("--seed-clips", type=int, default=8)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--quick", action="store_true", help="CPU, tiny counts: check the script")
    args = parser.parse_args()
    if args.quick:
        args.files, args.memory_clips, args.seed_clips, args.workers = 4, 2, 1, 1
    device = torch.device("cpu" if args.quick else "cuda")

    from embench import precision as precisions
    from embench.decoding import use_host_register
    from embench.plugins import get_registry

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_tflops(card)
    ceilings = card_ceilings(card) or CARDS["h100"]  # the CPU check uses the H100's
    pinned = "cudaHostRegister" if device.type == "cuda" and use_host_register() else \
        "cudaHostAlloc"  # as extract sets it, before the in-memory runs pin their clips
    print(f"{card}; torch {torch.__version__}; {CLIP_S:.0f} s clips from {FILE_SR} Hz WAV; "
          f"{args.workers} decode workers; pinned pool by {pinned}; random-init weights",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = write_wavs(Path(tmp), args.files, CLIP_S, prefix="f").clips
        warm = write_wavs(Path(tmp), min(32, args.files), CLIP_S, prefix="w").clips
        print(f"wrote {len(files) + len(warm)} WAV files in {time.perf_counter() - t0:.0f} s",
              flush=True)
        for name in args.encoders.split(","):
            encoder = get_registry().encoder(name)
            precision = precisions.resolve("auto", encoder, device)
            precisions.prepare(encoder, precision, device, "random", None)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            end_to_end(encoder, warm, Path(tmp) / f"warm-{name}", device, args.workers)
            e2e = end_to_end(encoder, files, Path(tmp) / f"cache-{name}", device, args.workers,
                             log=lambda m: print(f"    {m}", flush=True) if "embedded" in m
                             else None)  # where the main thread waited; pinned-memory growth
            mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0
            waves = noise_clips(args.memory_clips, encoder.info.sample_rate, device)
            fast, batch, _ = in_memory(encoder, waves, device, precision)
            fwd = forward_only(encoder, batch, device, precision=precision)
            for line in getattr(encoder, "route_notes", list)():  # what auto chose, and why
                print(f"    {name}: {line}", flush=True)
            # one recorded batch gives both the FLOPs (flop_counter's formulas) and the floor
            records, audio_s = record(encoder, 16 if device.type == "cuda" else 1, precision)
            flops = sum(r.flops for r in records) / audio_s
            floor = floor_audio_s(records, audio_s, ceilings)
            precisions.prepare(encoder, "fp32", device, "random", None)  # the seed's weights
            seed = seed_style_throughput(encoder, waves[:args.seed_clips], device)
            tflops = flops * e2e / 1e12
            row = (f"| {name} | {precision} | {e2e:,.0f} | {e2e / seed:.1f}x | {seed:,.0f} | "
                   f"{fast:,.0f} | {fwd:,.0f} | {batch} | {flops / 1e9:.1f} | {tflops:.0f} | "
                   f"{f'{100 * tflops / peak:.0f}%' if peak else '-'} | {mem:.1f} | "
                   f"{floor:,.0f} | {100 * fwd / floor:.0f}% |")
            rows.append(row)
            print(row, flush=True)
            print(f"E2E {name} {e2e:.0f} conv={os.environ.get('EMBENCH_UNFOLD_CONV', 'auto')}",
                  flush=True)
            encoder.unload()
            del waves
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print()
    print(f"{card}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, "
          f"EMBENCH_UNFOLD_CONV={os.environ.get('EMBENCH_UNFOLD_CONV', 'auto')}")
    print("| encoder | precision | end to end audio-s/s | vs seed-style | seed-style | in memory | "
          "forward only | batch (windows) | GFLOP per audio-s | TFLOP/s (e2e) | of bf16 peak "
          "| peak GiB | eager floor | forward / floor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
