"""The CNN feature encoder of wav2vec2-style models as plain GEMMs on a channels-last buffer.

Why: the strided convolutions that turn the waveform into 50/75 Hz frames (7 layers, 512
channels, kernels 10/3/2, strides 5/2) are a third of MERT-95M's FLOPs, and cuDNN runs them in
bf16 with ``implicit_convolve_sgemm`` kernels at about 155 TFLOP/s on an H200, well below the
tensor cores' GEMM rate; autocast also runs the first layer's GroupNorm and GELU in fp32 over
24,000 frames per 5 s window. Unfolding receptive fields into a copy (``fast_conv``'s
approach) cost more in gathers than it saved.

The trick here needs no gather. Frames are kept as one ``[batch, rows, channels]`` buffer whose
row count is a multiple of every later stride. A convolution of kernel ``k`` and stride ``s``
is then ``ceil(k / s)`` matrix products on *views* of that buffer: seen as rows of ``s``
consecutive frames (``[batch * rows / s, s * channels]``, no copy), tap block ``q`` is the same
view shifted by ``q`` rows, a valid GEMM operand with leading dimension ``s * channels``.
Kernel 3 / stride 2 is one GEMM with K = 1024 plus one accumulating GEMM with K = 512;
kernel 2 / stride 2 is a single GEMM. Rows past a window's valid length, and rows that straddle
two windows of the batch, are computed and ignored: the valid length is tracked per layer, and
the first layer's GroupNorm statistics use valid rows only. The first layer (one input channel,
kernel 10, stride 5) gathers its 10 taps, padded to 16 for aligned tensor-core loads: a copy of
about three times the raw audio, small next to its 512-channel output.

Only inference takes this path (no gradient); fine-tuning keeps the module's own ``forward``.
Parameters and ``state_dict`` are untouched. fp32 results equal the module's to float rounding
(tested); in bf16 the GEMMs accumulate in fp32 and the GroupNorm statistics are fp32 sums.
Not fixed as the route: it has not been timed on a GPU, and the CPU gains nothing (MERT-95M's
feature encoder alone on 2 cores, 5 s windows in pairs: 26-28 audio-s/s this way against 32-37
through oneDNN with bf16 weights, 13-16 against 16-17 in fp32). ``EMBENCH_FEATURE_ENCODER=gemm``
forces it; ``auto`` (the default) times it on CUDA against the module and the fused route
(:mod:`embench_plugins.route_choice`); ``benchmarks/gpu_variants.py`` times each.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from embench_plugins.fast_conv import compute_dtype, wrap_inference

if TYPE_CHECKING:
    import torch

#: First-layer taps padded to this many columns: 16 bf16 values = 32 bytes, aligned rows.
FIRST_LAYER_COLUMNS = 16
MODES = ("auto", "gemm", "fused", "module")
DEFAULT_MODE = "auto"


def _conv_rows(frames: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               stride: int) -> torch.Tensor:
    """One strided conv on a channels-last buffer ``[B, P, C]`` (``P % stride == 0``); returns
    ``[B, P / stride, C_out]`` whose valid rows are the conv's outputs over the valid input."""
    batch, rows, channels = frames.shape
    out_channels, _, kernel = weight.shape
    flat = frames.reshape(batch * rows // stride, stride * channels)  # a view
    n = flat.shape[0]
    out = None
    for q in range(math.ceil(kernel / stride)):
        taps = min(stride, kernel - q * stride)
        # [taps * C, C_out], rows ordered (tap, channel) like the view's columns
        w = weight[:, :, q * stride:q * stride + taps].permute(2, 1, 0)
        w = w.reshape(taps * channels, out_channels).to(frames.dtype)
        a = flat[q:, :taps * channels]  # leading dimension stride * C, no copy
        if out is None:
            out = (a @ w if bias is None else
                   (a @ w).add_(bias.to(frames.dtype)))
        else:
            out[:n - q].addmm_(a, w)  # rows past the end have no tap q: junk rows anyway
    return out.reshape(batch, rows // stride, out_channels)


def _first_layer(wave: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 stride: int, rows: int) -> torch.Tensor:
    """Conv of a ``[B, T]`` waveform with ``[C_out, 1, K]`` into ``rows`` channels-last rows."""
    import torch
    import torch.nn.functional as F

    out_channels, _, kernel = weight.shape
    batch = wave.shape[0]
    span = math.ceil(kernel / stride)  # hops of the input one output row reaches
    padded = F.pad(wave, (0, (rows + span - 1) * stride - wave.shape[1]))
    hops = padded.reshape(batch, rows + span - 1, stride)
    fields = torch.cat([hops[:, q:q + rows] for q in range(span)], dim=2)[..., :kernel]
    cols = max(FIRST_LAYER_COLUMNS, kernel)
    fields = F.pad(fields, (0, cols - kernel))
    w = F.pad(weight.reshape(out_channels, kernel).t(), (0, 0, 0, cols - kernel))
    out = fields.reshape(batch * rows, cols) @ w.to(wave.dtype)
    if bias is not None:
        out.add_(bias.to(out.dtype))
    return out.reshape(batch, rows, out_channels)


def _instance_norm(frames: torch.Tensor, valid: int, norm: torch.nn.GroupNorm) -> torch.Tensor:
    """GroupNorm with one group per channel (wav2vec2's first layer) on ``[B, P, C]``, with
    statistics over the first ``valid`` rows: fp32 sums, no fp32 copy of a bf16 buffer."""
    import torch

    head = frames[:, :valid]
    if frames.dtype == torch.float32:
        var, mean = torch.var_mean(head, dim=1, correction=0)
    else:
        mean = head.sum(dim=1, dtype=torch.float32) / valid
        square = torch.linalg.vector_norm(head, 2, dim=1, dtype=torch.float32).square() / valid
        var = (square - mean.square()).clamp(min=0)
    scale = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.float()
    shift = -mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias.float()
    return torch.addcmul(shift.unsqueeze(1).to(frames.dtype), frames,
                         scale.unsqueeze(1).to(frames.dtype))


def supports(encoder: torch.nn.Module) -> bool:
    """Whether ``encoder`` (a Wav2Vec2/Hubert feature encoder) has the layer shapes handled
    here: per-channel GroupNorm on the first layer or LayerNorm on every layer, or none."""
    import torch

    layers = getattr(encoder, "conv_layers", None)
    if not layers:
        return False
    for i, layer in enumerate(layers):
        conv = getattr(layer, "conv", None)
        if not isinstance(conv, torch.nn.Conv1d) or conv.groups != 1 or conv.padding[0] != 0 \
                or conv.dilation[0] != 1:
            return False
        if (i == 0) != (conv.in_channels == 1):
            return False
        norm = getattr(layer, "layer_norm", None)
        if isinstance(norm, torch.nn.GroupNorm) and norm.num_groups != norm.num_channels:
            return False
        if norm is not None and not isinstance(norm, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            return False
    return True


def features(encoder: torch.nn.Module, wave: torch.Tensor) -> torch.Tensor:
    """``encoder(wave)`` (``[B, T]`` -> ``[B, C, frames]``) computed as described above; the
    result is a transposed view of the channels-last buffer."""
    import torch

    layers = list(encoder.conv_layers)
    convs = [layer.conv for layer in layers]
    dtype = compute_dtype(wave, convs[0].weight.dtype)
    # every later view needs P % stride == 0 (a list: dynamo cannot trace a generator here)
    later = math.prod([c.stride[0] for c in convs[1:]])
    valid = (wave.shape[1] - convs[0].kernel_size[0]) // convs[0].stride[0] + 1
    if valid < 1:
        raise ValueError(f"{wave.shape[1]} samples are shorter than the first conv's kernel")
    rows = -(-valid // later) * later
    with torch.autocast(wave.device.type, enabled=False):
        x = _first_layer(wave.to(dtype), convs[0].weight, convs[0].bias, convs[0].stride[0],
                         rows)
        for i, (layer, conv) in enumerate(zip(layers, convs, strict=True)):
            if i:
                x = _conv_rows(x, conv.weight, conv.bias, conv.stride[0])
                valid = (valid - conv.kernel_size[0]) // conv.stride[0] + 1
                if valid < 1:
                    raise ValueError(f"too few samples for conv layer {i}")
            norm = getattr(layer, "layer_norm", None)
            if isinstance(norm, torch.nn.GroupNorm):
                x = _instance_norm(x, valid, norm)
            elif isinstance(norm, torch.nn.LayerNorm):
                x = torch.nn.functional.layer_norm(
                    x, norm.normalized_shape,
                    None if norm.weight is None else norm.weight.to(dtype),
                    None if norm.bias is None else norm.bias.to(dtype), norm.eps)
            x = layer.activation(x)
    return x[:, :valid].transpose(1, 2)


def install(model: torch.nn.Module, mode: str | None = None) -> bool:
    """Route ``model.feature_extractor`` through :func:`features` at inference; returns whether
    it did. ``mode`` (default ``EMBENCH_FEATURE_ENCODER``, else ``auto``): ``gemm``, ``fused``
    (:func:`fused_routes.install_features`), ``module`` (leave the model as it is) or ``auto``:
    whichever of the module, ``gemm`` and ``fused`` a :class:`route_choice.RouteChoice` times
    fastest on CUDA (the module elsewhere)."""
    from embench_plugins import fused_routes, route_choice

    mode = mode or os.environ.get("EMBENCH_FEATURE_ENCODER", DEFAULT_MODE)
    if mode not in MODES:
        raise ValueError(f"EMBENCH_FEATURE_ENCODER must be one of {', '.join(MODES)}, "
                         f"not {mode!r}")
    if mode == "fused":  # the same layout, each layer one Triton kernel with its GELU
        return fused_routes.install_features(model)
    encoder = getattr(model, "feature_extractor", None)
    if mode == "module" or encoder is None or not supports(encoder):
        return False
    if mode == "gemm":
        wrap_inference(encoder, lambda wave: features(encoder, wave), "embench_gemm")
        return True
    candidates = {"module": encoder.forward, "gemm": lambda wave: features(encoder, wave)}
    if fused_routes.supports_features(encoder):
        caches = fused_routes.weight_caches(encoder)
        candidates["fused"] = lambda wave: fused_routes.features(encoder, wave, caches)
    choice = route_choice.RouteChoice("CNN feature encoder", candidates, "module")
    if wrap_inference(encoder, choice, "embench_gemm"):
        route_choice.attach(model, choice)
    return True
