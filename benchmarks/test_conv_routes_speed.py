"""The inference routes of ``plugins/fast_conv.py`` and ``plugins/folded_norm.py`` on the CPU,
as ratios measured in the same process: the positional convolution by FFT against unfold + GEMM
and against the module's own conv, with each one's largest deviation from a float64 convolution
beside it; and MERT-95M's whole forward with today's default routes against the previous ones.

Why: ``plugins/fast_conv.py`` runs MERT's / wav2vec 2.0's positional conv (768 channels,
kernel 128, 16 groups) by FFT by default since ``benchmarks/roofline.py`` counted the unfolded
GEMM as the part of MERT-95M that moves the most bytes. On a GPU that is a byte count, not a
timing; here the three routes are timed on real-size random weights (weight norm included), in
fp32 and with bf16 weights, on batches of 5 s windows (375 frames).

The routes alternate round by round; ratios are medians of per-round ratios.
Run: ``python -m pytest benchmarks/test_conv_routes_speed.py -m slow --benchmark-enable -s``.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from bench_models import CPU, make_encoder

from embench_plugins import fast_conv
from embench_plugins.route_choice import ROUTE_VARIABLES

FRAMES = 375  # a 5 s window of MERT at 75 Hz


def _pos_conv(dtype: torch.dtype):
    encoder = make_encoder("mert", "real")
    encoder.load(CPU, "random")
    conv = encoder.model.encoder.pos_conv_embed.conv
    conv.forward = conv.__class__.forward.__get__(conv)  # the module's own conv, unwrapped
    return conv.to(dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("batch", [2, 8])
def test_fft_positional_conv_vs_unfold_and_module(benchmark, dtype, batch):
    conv = _pos_conv(dtype)
    x = 0.5 * torch.randn(batch, conv.in_channels, FRAMES, generator=torch.Generator()
                          .manual_seed(0)).to(dtype)
    fft = fast_conv.cached_fft(conv)
    routes = {
        "module": lambda: conv(x),
        "unfold": lambda: fast_conv.unfold_conv1d(x, conv.weight, conv.bias, 1, 64, 16),
        "fft": lambda: fft(x, conv.weight, conv.bias, 1, 64, 16),
    }
    with torch.inference_mode():
        weight = conv.weight.double()
        ref = F.conv1d(x.double(), weight, conv.bias.double(), padding=64, groups=16)
        error = {name: ((run().double() - ref).abs().max() / ref.abs().max()).item()
                 for name, run in routes.items()}  # also the warm-up (the spectrum is cached)
        seconds: dict[str, list[float]] = {name: [] for name in routes}

        def one_round() -> None:
            for name, run in routes.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)

        benchmark.pedantic(one_round, rounds=1 if benchmark.disabled else 5, iterations=1)
    speedup = {other: statistics.median(o / f for o, f in zip(seconds[other], seconds["fft"],
                                                              strict=True))
               for other in ("module", "unfold")}
    assert error["fft"] <= 2 * max(error["unfold"], 1e-6)  # as exact as the GEMM route
    benchmark.extra_info.update(batch=batch, dtype=str(dtype), frames=FRAMES,
                                seconds=seconds, speedup=speedup, max_rel_error=error)
    print(f"\npositional conv, {batch} x {FRAMES} frames, {dtype}: fft "
          f"{1e3 * statistics.median(seconds['fft']):.1f} ms, x{speedup['unfold']:.2f} vs "
          f"unfold + GEMM, x{speedup['module']:.2f} vs the module's conv; max error / max "
          + ", ".join(f"{k} {v:.1e}" for k, v in error.items()))


def _forward_with(routes: dict[str, str], dtype: torch.dtype):
    """A real-size MERT-95M (random weights) loaded with exactly ``routes`` set among the route
    variables (the others unset: the defaults), the caller's environment restored after."""
    from embench_plugins.mert import MertEncoder

    with pytest.MonkeyPatch.context() as env:
        for variable in ROUTE_VARIABLES:
            env.delenv(variable, raising=False)
        for variable, value in routes.items():
            env.setenv(variable, value)
        encoder = MertEncoder("mert-v1-95m")  # not the registry's shared instance
        encoder.load(CPU, "random")
    if dtype != torch.float32:
        encoder.cast_weights(dtype)
    return encoder


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_default_routes_vs_previous_whole_forward(benchmark, dtype):
    """MERT-95M's whole forward (2 x 5 s windows) with today's default routes (FFT positional
    conv, folded first layer) against the previous ones (unfolded positional conv, conv then
    GroupNorm modules), same weights, alternating."""
    encoders = {
        "previous": _forward_with({"EMBENCH_UNFOLD_CONV": "pos",
                                   "EMBENCH_FIRST_LAYER": "module"}, dtype),
        "default": _forward_with({}, dtype),
    }
    x = 0.1 * torch.randn(2, 5 * 24_000, generator=torch.Generator().manual_seed(0))
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    with torch.inference_mode():
        outs = {name: enc.forward(x) for name, enc in encoders.items()}  # also the warm-up

        def one_round() -> None:
            for name, enc in encoders.items():
                start = time.perf_counter()
                enc.forward(x)
                seconds[name].append(time.perf_counter() - start)

        benchmark.pedantic(one_round, rounds=1 if benchmark.disabled else 4, iterations=1)
    speedup = statistics.median(p / d for p, d in zip(seconds["previous"], seconds["default"],
                                                       strict=True))
    a, b = (torch.stack(outs[k], 1).float().flatten(2) for k in ("previous", "default"))
    cosine = F.cosine_similarity(a, b, dim=2).min().item()  # per window and layer
    assert cosine > (0.99999 if dtype == torch.float32 else 0.999)
    benchmark.extra_info.update(dtype=str(dtype), seconds=seconds, speedup=speedup,
                                worst_cosine=cosine)
    print(f"\nMERT-95M forward, 2 x 5 s, {dtype}: previous routes "
          f"{statistics.median(seconds['previous']):.3f} s, default "
          f"{statistics.median(seconds['default']):.3f} s (x{speedup:.2f}); worst per-layer "
          f"cosine {cosine:.6f}")
