"""Faster inference convolutions for wav2vec2-style encoders: FFT, or unfold + matrix multiply.

Why: on an H200 with bf16, cuDNN runs the positional convolution of MERT / wav2vec 2.0 / HuBERT
(768 channels, kernel 128, 16 groups) with a generic ``implicit_convolve_sgemm`` kernel: 70 ms of
a 200 ms forward pass for 256 five-second windows, for under 1% of the model's FLOPs, and
``cudnn.benchmark`` finds nothing better. Written as "gather every receptive field, then one
batched GEMM" (:func:`unfold_conv1d`), the same arithmetic runs on the tensor cores at GEMM
speed (forward 6,210 -> 7,517 audio-s/s on that H200), but the gather writes and reads 128
copies of the input: by ``benchmarks/roofline.py``'s count the most bytes any part of MERT-95M
moves, a floor of 17 us per audio-second on an H100. By FFT (:func:`fft_conv1d`) the same
convolution moves a few copies of its input and runs in fp32: the route the CPU takes, and one
of the three (with the unfold and cuDNN's) that ``auto``, the default, times on CUDA
(:mod:`embench_plugins.route_choice`).

Only inference takes these paths (no gradient); training keeps the module's own ``forward``, so
fine-tuning is untouched. Results equal ``F.conv1d`` to float rounding (tested). The parameters
and ``state_dict`` do not change: only the instance's ``forward`` is wrapped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def compute_dtype(x: torch.Tensor, fallback: torch.dtype) -> torch.dtype:
    """The dtype a module's conv would compute in: autocast's where it is on, else
    ``fallback`` (the weight's or the input's). Shared by every inference route here and in
    ``folded_norm`` / ``gemm_features``, which replace modules and must match their dtype."""
    import torch

    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return fallback


#: Elements of the gathered receptive fields per chunk (2**28 bf16 values = 512 MiB).
CHUNK_ELEMENTS = 2**28


def unfold_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  stride: int = 1, padding: int = 0, groups: int = 1) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, stride, padding, groups=groups)`` for ``x`` ``[B, C, T]``,
    computed as a gather of receptive fields and one batched matmul per batch chunk."""
    import torch
    import torch.nn.functional as F

    x = x.to(compute_dtype(x, x.dtype))  # gather in the dtype the GEMM will use
    batch, channels, _ = x.shape
    out_channels, group_channels, kernel = weight.shape
    if channels != group_channels * groups:
        raise ValueError(f"input has {channels} channels, weight expects "
                         f"{group_channels * groups}")
    if padding:
        x = F.pad(x, (padding, padding))
    length = x.shape[-1]
    steps = (length - kernel) // stride + 1
    per_group_out = out_channels // groups
    # [G, Cg*K, Og]: column (c, k) of group g, matching the gathered fields' layout
    w = weight.to(x.dtype).reshape(groups, per_group_out, group_channels * kernel).transpose(1, 2)
    per_item = steps * channels * kernel
    chunk = max(1, CHUNK_ELEMENTS // max(1, per_item))
    out = None
    for b0 in range(0, batch, chunk):
        xs = x[b0:b0 + chunk].reshape(-1, groups, group_channels, length)
        fields = xs.unfold(3, kernel, stride)  # [b, G, Cg, steps, K] (a view)
        fields = fields.permute(0, 1, 3, 2, 4).reshape(-1, groups, steps, group_channels * kernel)
        y = torch.matmul(fields, w)  # [b, G, steps, Og]
        y = y.permute(0, 1, 3, 2).reshape(-1, out_channels, steps)
        if bias is not None:
            y = y + bias.to(y.dtype).unsqueeze(1)
        if out is None:
            out = y.new_empty(batch, out_channels, steps)
        out[b0:b0 + len(y)] = y
    return out


def fft_length(n: int) -> int:
    """The smallest even length >= ``n`` with no prime factor above 7 (fast for cuFFT and
    pocketfft alike)."""
    m = max(2, n + (n % 2))
    while True:
        rest = m
        for p in (2, 3, 5, 7):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 2


def weight_spectrum(weight: torch.Tensor, groups: int, length: int,
                    padding: int = 0) -> torch.Tensor:
    """``conj(rfft(weight))`` as ``[frequencies, groups, in per group, out per group]``
    complex64: the right-hand matrices of :func:`fft_conv1d`'s per-frequency products.

    ``padding``: the conv's left zero padding, as the kernel's circular shift by ``-padding``
    (a phase on every frequency), so the input needs no padded copy: output ``t`` then reads
    input ``t + k - padding``, and the taps left of the input wrap into the zeros that rfft
    appends past it (``length`` covers the input and both paddings)."""
    import torch

    out_channels, group_channels, kernel = weight.shape
    placed = weight.float().new_zeros(out_channels, group_channels, length)
    placed[..., :kernel] = weight.float()
    placed = torch.roll(placed, -padding, dims=-1)
    spectrum = torch.fft.rfft(placed).conj()  # [O, Cg, F]
    spectrum = spectrum.reshape(groups, out_channels // groups, group_channels, -1)
    return spectrum.permute(3, 0, 2, 1).contiguous()  # laid out as the batched matmul reads it


def fft_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               stride: int = 1, padding: int = 0, groups: int = 1,
               spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, padding=padding, groups=groups)`` (stride 1) by FFT, in fp32.

    Why: the positional convolution (kernel 128) unfolded for a GEMM writes and reads 128
    copies of its input, about 30 MB per audio-second for MERT-95M, more bytes than any other
    part of the model moves (``benchmarks/roofline.py``). In the frequency domain it is one
    complex ``[batch, in per group] x [in per group, out per group]`` product per frequency and
    group, and every tensor is a few times the input's size. Every step runs in fp32 (autocast
    off), so the result is closer to the exact convolution than a bf16 GEMM's.
    ``spectrum``: :func:`weight_spectrum` of ``weight`` for this input length, if cached.
    """
    import torch

    if stride != 1:
        raise ValueError(f"fft_conv1d needs stride 1, got {stride}")
    batch, channels, steps_in = x.shape
    out_channels, group_channels, kernel = weight.shape
    if channels != group_channels * groups:
        raise ValueError(f"input has {channels} channels, weight expects "
                         f"{group_channels * groups}")
    out_dtype = compute_dtype(x, x.dtype)
    padded = steps_in + 2 * padding
    steps = padded - kernel + 1
    length = fft_length(padded)  # correlation outputs 0..steps-1 never wrap around
    with torch.autocast(x.device.type, enabled=False):
        if spectrum is None:
            spectrum = weight_spectrum(weight, groups, length, padding)
        # the input cast to fp32 straight into a buffer of the FFT's length (one copy, not a
        # cast then a pad), zeros after it; the left padding is in the weight's spectrum
        signal = torch.empty(batch, channels, length, dtype=torch.float32, device=x.device)
        signal[..., :steps_in] = x
        signal[..., steps_in:] = 0
        spec = torch.fft.rfft(signal)  # [B, C, F]
        spec = spec.reshape(batch, groups, group_channels, -1).permute(3, 1, 0, 2)
        y = torch.matmul(spec, spectrum)  # [F, G, B, Og]
        y = torch.fft.irfft(y.permute(2, 1, 3, 0).reshape(batch, out_channels, -1), n=length)
        y = y[..., :steps]
        if bias is None:
            return y.to(out_dtype)
        # the bias added in fp32 and the sum rounded to the output dtype in one pass
        out = torch.empty(batch, out_channels, steps, dtype=out_dtype, device=x.device)
        return torch.add(y, bias.float().unsqueeze(1), out=out)


def channels_last_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         stride: int = 1, padding: int = 0, groups: int = 1) -> torch.Tensor:
    """``F.conv1d`` run as a channels-last (NHWC) ``conv2d`` of height 1, the layout cuDNN's
    tensor-core kernels want. The result keeps that layout (``[B, C, T]`` with channel stride
    1), so the next layer's conversion is free and the encoder's final ``transpose(1, 2)`` to
    ``[B, T, C]`` is contiguous."""
    import torch
    import torch.nn.functional as F

    x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    w4 = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    return F.conv2d(x4, w4, bias, (1, stride), (0, padding), groups=groups).squeeze(2)


def wrap_inference(module: torch.nn.Module, inference: Callable[[torch.Tensor], torch.Tensor],
                   marker: str) -> bool:
    """Make ``module.forward`` run ``inference`` when no gradient is being recorded and its own
    forward otherwise, so fine-tuning never sees a route. ``marker`` names the route on the new
    forward: a module already wrapped with it is left alone. Returns whether it wrapped now.
    The one mechanism behind this module's, ``folded_norm``'s and ``gemm_features``' routes."""
    import torch

    if getattr(module.forward, marker, False):
        return False
    original = module.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return original(x)
        return inference(x)

    setattr(forward, marker, True)
    module.forward = forward
    return True


def _conv_call(conv: torch.nn.Conv1d, how: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """``how`` applied with ``conv``'s own parameters and hyper-parameters."""
    return lambda x: how(x, conv.weight, conv.bias, conv.stride[0], conv.padding[0], conv.groups)


def parameter_state(params: Iterable[torch.Tensor]) -> tuple:
    """What changes when a parameter is moved, cast or trained in place: storage, dtype and
    version counter (inference tensors, loaded under ``inference_mode``, keep none). The key of
    every per-weight cache of the inference routes (spectra, GEMM operands)."""
    return tuple((p.data_ptr(), p.dtype, None if p.is_inference() else p._version)
                 for p in params)


def cached_fft(conv: torch.nn.Conv1d) -> Callable:
    """:func:`fft_conv1d` for ``conv``, with the weight's spectrum computed once per input
    length and parameter state (a weight-norm parametrisation recomputes ``conv.weight`` on
    every access, and its spectrum costs more than a small batch's convolution)."""
    import torch

    cache: dict[tuple, torch.Tensor] = {}

    def how(x, weight, bias, stride, padding, groups):
        if torch.compiler.is_compiling():  # a graph recomputes it; the lookup would break it
            return fft_conv1d(x, weight, bias, stride, padding, groups)
        length = fft_length(x.shape[-1] + 2 * padding)
        key = (length, x.device, parameter_state(conv.parameters()))
        if key not in cache:
            cache.clear()  # one entry: a new length or new weights replace the old spectrum
            cache[key] = weight_spectrum(weight, groups, length, padding)
        return fft_conv1d(x, weight, bias, stride, padding, groups, cache[key])

    return how


#: ``EMBENCH_UNFOLD_CONV`` values: what the positional conv and the CNN convolutions run as.
MODES = ("auto", "fft", "pos", "all", "cl", "off")


def install(model: torch.nn.Module, which: str | None = None) -> list[str]:
    """At inference, route the positional convolution through :func:`fft_conv1d` (``"fft"``)
    or :func:`unfold_conv1d` (``"pos"``), or (``"auto"``, the default) through whichever of
    those and the module's own conv :class:`route_choice.RouteChoice` times fastest on CUDA
    (FFT elsewhere); ``"all"`` unfolds the CNN feature encoder's convolutions as well, ``"cl"``
    runs those through :func:`channels_last_conv1d` (both with the unfolded positional conv).
    ``EMBENCH_UNFOLD_CONV`` (one of :data:`MODES`) overrides the default. Returns the names of
    the wrapped modules."""
    import torch

    from embench_plugins import route_choice

    which = which or os.environ.get("EMBENCH_UNFOLD_CONV", "auto")
    if which == "off":
        return []
    if which not in MODES:
        raise ValueError(f"EMBENCH_UNFOLD_CONV must be one of {', '.join(MODES)}, not {which!r}")
    wrapped = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Conv1d):
            continue
        if "pos_conv_embed" in name and which == "auto" and module.stride[0] == 1:
            inference = route_choice.RouteChoice(
                "positional conv", {"fft": _conv_call(module, cached_fft(module)),
                                    "pos": _conv_call(module, unfold_conv1d),
                                    "module": module.forward}, "fft")
        elif "pos_conv_embed" in name:
            use_fft = which == "fft" and module.stride[0] == 1
            inference = _conv_call(module, cached_fft(module) if use_fft else unfold_conv1d)
        elif which in ("all", "cl"):
            inference = _conv_call(module, unfold_conv1d if which == "all"
                                   else channels_last_conv1d)
        else:
            continue
        if wrap_inference(module, inference, "embench_unfold"):
            wrapped.append(name)
            if isinstance(inference, route_choice.RouteChoice):
                route_choice.attach(model, inference)
    return wrapped
