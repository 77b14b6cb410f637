"""The first CNN layer of wav2vec2-style encoders with its GroupNorm folded into the conv.

Why: MERT-95M and wav2vec 2.0 base start with a convolution from the waveform to 512 channels
(kernel 10, stride 5: 4,800 frames per second at 24 kHz) followed by a GroupNorm with one group
per channel, i.e. each channel normalised over time, per window. Run as modules, the conv writes
its 512-channel output and the GroupNorm reads it (twice, for its statistics and to normalise)
and writes it again: by ``benchmarks/roofline.py``'s count about 10 MB per audio-second on top
of the conv's own output, the largest single elementwise pass in the model.

The conv is linear and has one input channel, so its output statistics follow from the
waveform's: for filter ``w_c`` and frames ``f_t`` (the 10 samples under output ``t``), the
channel mean is ``w_c . mean(f)`` and the variance ``w_c^T Cov(f) w_c``, with ``Cov(f)`` a 10x10
matrix per window. GroupNorm's ``(x - mean) / sqrt(var + eps) * gamma + beta`` then becomes a
per-window rescaled filter plus a per-window bias, so conv + GroupNorm is one batched matmul
whose output is written once; a conv bias cancels in the normalisation. The statistics are
computed in float64 from the frames (a few values per window), so they carry no rounding of a
bf16 conv output, and a near-silent channel's variance is not lost in cancellation.

Only inference takes this path (no gradient); fine-tuning keeps the module's own ``forward``.
Parameters and ``state_dict`` are untouched. fp32 results equal the module's to float rounding
(tested). ``EMBENCH_FIRST_LAYER=module`` keeps the module's conv and GroupNorm.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from embench_plugins.fast_conv import compute_dtype, wrap_inference

if TYPE_CHECKING:
    import torch

MODES = ("folded", "module")
#: Taps plus the bias column, padded to this many: 16 bf16 values = 32 bytes, aligned rows.
COLUMNS = 16


def foldable(layer: torch.nn.Module) -> bool:
    """A layer this module can fold: a one-input-channel conv followed by a GroupNorm with one
    group per channel (wav2vec2's / HuBERT's ``GroupNormConvLayer``)."""
    import torch

    conv, norm = getattr(layer, "conv", None), getattr(layer, "layer_norm", None)
    return (isinstance(conv, torch.nn.Conv1d) and isinstance(norm, torch.nn.GroupNorm)
            and conv.in_channels == 1 and conv.groups == 1 and conv.padding == (0,)
            and conv.dilation == (1,) and norm.num_groups == norm.num_channels
            and norm.num_channels == conv.out_channels
            and conv.kernel_size[0] < COLUMNS)


def folded_conv_groupnorm(x: torch.Tensor, conv: torch.nn.Conv1d,
                          norm: torch.nn.GroupNorm) -> torch.Tensor:
    """``norm(conv(x))`` for ``x`` ``[B, 1, T]``, as one batched matmul with per-window filters.

    Returns ``[B, C, frames]`` in the dtype the conv would produce (autocast's, else the
    weight's), contiguous like the module's output.
    """
    import torch

    kernel, stride = conv.kernel_size[0], conv.stride[0]
    out_dtype = compute_dtype(x, conv.weight.dtype)
    batch = x.shape[0]
    with torch.autocast(x.device.type, enabled=False):
        frames = x[:, 0].unfold(-1, kernel, stride)  # [B, F, k], a view
        n_frames = frames.shape[1]
        filters_k, shift = folded_filters(frames, conv, norm)
        # [B, C, COLUMNS]: the rescaled taps, the shift against a row of ones, then zeros
        filters = x.new_zeros(batch, conv.out_channels, COLUMNS, dtype=torch.float64)
        filters[:, :, :kernel] = filters_k
        filters[:, :, kernel] = shift
        taps = x.new_zeros(batch, COLUMNS, n_frames, dtype=out_dtype)
        taps[:, :kernel] = frames.transpose(1, 2)
        taps[:, kernel] = 1
        return torch.bmm(filters.to(out_dtype), taps)  # [B, C, F]


def folded_filters(frames: torch.Tensor, conv: torch.nn.Conv1d,
                   norm: torch.nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window filters ``[B, C, k]`` and shifts ``[B, C]`` (float64) such that
    ``norm(conv(x))[b, c, t] = filters[b, c] . frames[b, t] + shift[b, c]``, from the
    ``[B, F, k]`` frames under the conv's outputs. Shared with ``fused_routes``."""
    import torch

    # Statistics in float64: a filter nearly orthogonal to the audio (band-limited audio
    # leaves the top of a 24 kHz band empty) has a variance far below the terms of
    # w^T Cov w, which float32 would round away; the module gets it from its outputs.
    stats = frames.double()
    mean = stats.mean(dim=1)  # [B, k]
    centred = stats - mean.unsqueeze(1)
    cov = centred.transpose(1, 2) @ centred / frames.shape[1]  # [B, k, k], population
    w = conv.weight.double()[:, 0, :]  # [C, k]
    var = torch.einsum("ck,bkj,cj->bc", w, cov, w).clamp(min=0)  # [B, C]
    scale = torch.rsqrt(var + norm.eps)
    if norm.affine:
        scale = scale * norm.weight.double()
    shift = -(mean @ w.T) * scale  # [B, C]; a conv bias would cancel here
    if norm.affine:
        shift = shift + norm.bias.double()
    return w.unsqueeze(0) * scale.unsqueeze(2), shift


def _folded_forward(layer: torch.nn.Module):
    return lambda x: layer.activation(folded_conv_groupnorm(x, layer.conv, layer.layer_norm))


def install(model: torch.nn.Module, mode: str | None = None) -> list[str]:
    """At inference, run every foldable layer of ``model`` (in practice the first CNN layer of
    group-norm wav2vec2/HuBERT models) through :func:`folded_conv_groupnorm`.
    ``EMBENCH_FIRST_LAYER`` (one of :data:`MODES`) overrides ``mode``; returns the names of the
    wrapped layers."""
    mode = mode or os.environ.get("EMBENCH_FIRST_LAYER", MODES[0])
    if mode not in MODES:
        raise ValueError(f"EMBENCH_FIRST_LAYER must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "module":
        return []
    wrapped = []
    for name, layer in model.named_modules():
        if foldable(layer) and wrap_inference(layer, _folded_forward(layer), "embench_folded"):
            wrapped.append(name)
    return wrapped
