"""Which inference variants of the wav2vec2-style encoders are faster on a GPU, and by how much:
a decision script for the defaults, each figure beside the baseline from the same process.

For each encoder (real size, seeded random weights) it runs ``--precision`` ``bf16-autocast``
or ``bf16`` (:mod:`embench.precision`) with these sets of kernel routes:

- ``previous``: the positional conv unfolded for a GEMM (``EMBENCH_UNFOLD_CONV=pos``) and the
  first CNN layer as conv + GroupNorm modules (``EMBENCH_FIRST_LAYER=module``), i.e. what the
  README's H200 table measured;
- ``fft``: the positional conv by FFT and the first layer's GroupNorm folded into its conv
  (:mod:`embench_plugins.fast_conv`, :mod:`embench_plugins.folded_norm`);
- ``fft+gemm``: the same with the whole CNN feature encoder as channels-last GEMMs
  (``EMBENCH_FEATURE_ENCODER=gemm``, :mod:`embench_plugins.gemm_features`);
- ``fused-cnn``: ``fft`` with each CNN layer one Triton kernel, GELU included
  (``EMBENCH_FEATURE_ENCODER=fused``, :mod:`embench_plugins.fused_routes`); the first call of
  each shape family autotunes, inside the warm-up;
- ``fused``: that plus the FFN's first GEMM and its GELU as one Triton kernel
  (``EMBENCH_FFN=fused``);
- ``fused+layer``: that plus each encoder layer's q/k/v as one GEMM and each residual add
  fused into the LayerNorm after it (``EMBENCH_ENCODER_LAYER=fused``);
- ``auto``: the defaults, which time the candidates of the positional conv, the CNN, the FFN
  and the encoder layer on the first large batch and keep the fastest that agree
  (:mod:`embench_plugins.route_choice`); its choices are printed.

Per variant it prints the model's forward alone on a device-resident batch, the in-memory
extraction path (``embed_group`` on decoded 30 s clips, pooling included), the ratio of each
against the first variant (autocast with the previous routes), peak GPU memory, and the worst
per-layer cosine similarity of pooled embeddings against fp32 (a sanity check on random
weights, not a statement about trained ones). Then end to end from WAV files (``extract``) for
the defaults (``auto``) and for the fastest variant, with the extraction's own breakdown of
where the main thread waited.

``--compile`` adds ``fused+layer`` under ``torch.compile`` for the first encoder: the fused
kernels are opaque operators there, and Inductor fuses what is left around them (the positional
conv's pad and GELU, the input normalisation, the pooling's bookkeeping).

Run: ``python benchmarks/gpu_variants.py`` (about 4 minutes on an H100/H200; ``--compile`` a
few more); ``--quick`` runs it on the CPU with tiny counts to check the script.
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
from benchmarks.bench_models import write_wavs  # noqa: E402
from benchmarks.gpu import CLIP_S, end_to_end, forward_only, in_memory, noise_clips  # noqa: E402

#: Route sets: environment variables each plugin reads when it loads.
_FFT = {"EMBENCH_UNFOLD_CONV": "fft", "EMBENCH_FIRST_LAYER": "folded",
        "EMBENCH_FEATURE_ENCODER": "module", "EMBENCH_FFN": "module",
        "EMBENCH_ENCODER_LAYER": "module"}
ROUTES = {
    "previous": {**_FFT, "EMBENCH_UNFOLD_CONV": "pos", "EMBENCH_FIRST_LAYER": "module"},
    "fft": _FFT,
    "fft+gemm": {**_FFT, "EMBENCH_FEATURE_ENCODER": "gemm"},
    "fused-cnn": {**_FFT, "EMBENCH_FEATURE_ENCODER": "fused"},
    "fused": {**_FFT, "EMBENCH_FEATURE_ENCODER": "fused", "EMBENCH_FFN": "fused"},
    "fused+layer": {**_FFT, "EMBENCH_FEATURE_ENCODER": "fused", "EMBENCH_FFN": "fused",
                    "EMBENCH_ENCODER_LAYER": "fused"},
    "auto": {**_FFT, "EMBENCH_UNFOLD_CONV": "auto", "EMBENCH_FEATURE_ENCODER": "auto",
             "EMBENCH_FFN": "auto", "EMBENCH_ENCODER_LAYER": "auto"},
}
VARIANTS = [  # (precision, routes); the first is the baseline of every ratio
    ("bf16-autocast", "previous"),
    ("bf16", "previous"),
    ("bf16", "fft"),
    ("bf16", "fft+gemm"),
    ("bf16", "fused-cnn"),
    ("bf16", "fused"),
    ("bf16", "fused+layer"),
    ("bf16", "auto"),
]


def _load(name: str, precision: str, routes: str, device: torch.device):
    from embench import precision as precisions
    from embench.plugins import get_registry

    os.environ.update(ROUTES[routes])  # read by the plugins when the model loads
    encoder = get_registry().encoder(name)
    encoder.unload()  # the registry's instance: a reload installs this variant's routes
    precisions.prepare(encoder, precision, device, "random", None)
    return encoder


def worst_cosine(pooled, reference) -> float:
    worst = 1.0
    for clip, ref_clip in zip(pooled, reference, strict=True):
        for layer, ref in zip(clip, ref_clip, strict=True):
            cos = torch.nn.functional.cosine_similarity(layer.float(), ref.float(), dim=-1)
            worst = min(worst, cos.min().item())
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="mert-v1-95m,wav2vec2-base")
    parser.add_argument("--batch", type=int, default=256, help="windows per forward-only pass")
    parser.add_argument("--memory-clips", type=int, default=128)
    parser.add_argument("--files", type=int, default=512, help="30 s WAV files, end to end")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--compile", action="store_true",
                        help="also time bf16 + fused+layer routes under torch.compile (the "
                             "first encoder only; compiling costs a minute or two per batch "
                             "shape)")
    parser.add_argument("--quick", action="store_true", help="CPU, tiny counts: check the script")
    args = parser.parse_args()
    reps = 5
    if args.quick:
        args.batch, args.memory_clips, args.files, args.workers, reps = 2, 2, 2, 1, 1
    device = torch.device("cpu" if args.quick else "cuda")
    from embench.decoding import use_host_register

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if device.type == "cuda":
        use_host_register()  # as extract sets it, before the in-memory runs pin their clips
    print(f"{card}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}; "
          f"{args.workers} decode threads; random-init weights", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = write_wavs(Path(tmp), args.files, CLIP_S, prefix="f").clips
        for index, name in enumerate(args.encoders.split(",")):
            reference_encoder = _load(name, "fp32", "previous", device)
            waves = noise_clips(args.memory_clips, reference_encoder.info.sample_rate, device)
            _, _, reference = in_memory(reference_encoder, waves[:4], device, "fp32")
            reference_encoder.unload()
            results = {}
            compiled = [("bf16", "fused+layer", True)] if args.compile and index == 0 else []
            for precision, routes, *compile_ in [*VARIANTS, *compiled]:
                encoder = _load(name, precision, routes, device)
                forward = torch.compile(encoder.forward, dynamic=False) if compile_ else None
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                fwd = forward_only(encoder, args.batch, device, reps, precision, forward)
                mem_rate, batch, pooled = in_memory(encoder, waves, device, precision, forward)
                peak = (torch.cuda.max_memory_allocated(device) / 2**30
                        if device.type == "cuda" else 0.0)
                if not compile_:  # a compiled run is not a candidate for the end-to-end runs
                    results[(precision, routes)] = (fwd, mem_rate)
                base_fwd, base_mem = results[VARIANTS[0]]
                routes = routes + ("+compile" if compile_ else "")
                row = (f"| {name} | {precision} | {routes} | {fwd:,.0f} | {fwd / base_fwd:.2f}x | "
                       f"{mem_rate:,.0f} | {mem_rate / base_mem:.2f}x | {batch} | {peak:.1f} | "
                       f"{worst_cosine(pooled, reference):.5f} |")
                rows.append(row)
                print(row, flush=True)
                for line in encoder.route_notes():
                    print(f"    {line}", flush=True)
                encoder.unload()
            best = max(results, key=lambda v: results[v][1])
            for precision, routes in dict.fromkeys([("bf16", "auto"), best]):
                encoder = _load(name, precision, routes, device)
                label = f"{name}-{precision}-{routes}"  # own caches: a warm-up that found
                # its clips cached would warm nothing
                end_to_end(encoder, files[:4], Path(tmp) / f"warm-{label}", device,
                           args.workers, precision)
                rate = end_to_end(encoder, files, Path(tmp) / f"e2e-{label}", device,
                                  args.workers, precision,
                                  log=lambda m: print(f"    {m}", flush=True)
                                  if "embedded" in m else None)
                line = (f"end to end {name} {precision} {routes}: {len(files)} files "
                        f"{rate:,.0f} audio-s/s")
                rows.append(line)
                print(line, flush=True)
                encoder.unload()
    print()
    print(f"{card}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print("| encoder | precision | routes | forward audio-s/s | vs autocast+previous | in memory "
          "audio-s/s | vs autocast+previous | batch | peak GiB | worst cosine vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for variable in ROUTES["auto"]:
        os.environ.pop(variable, None)


if __name__ == "__main__":
    main()
