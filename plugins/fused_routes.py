"""Inference routes of wav2vec2-style encoders through the fused operators of
:mod:`embench_plugins.fused_ops`: every activation applied before the single store.

- **The CNN feature encoder** (``EMBENCH_FEATURE_ENCODER=fused`` forces it): the first
  layer's GroupNorm folded into per-window filters (:func:`folded_norm.folded_filters`) and
  applied, with its GELU, by one kernel reading the taps straight from the waveform; each later
  layer (kernel 3 or 2, stride 2) one GEMM over a channels-last buffer whose A operand rows
  overlap, GELU in the epilogue. By ``benchmarks/roofline.py``'s count this drops the seven
  GELU passes (19.5 MB per audio-second of MERT-95M) and the first layer's taps copy.
- **The transformer's feed-forward** (``EMBENCH_FFN=fused`` forces it): ``intermediate_dense``
  and its GELU as one GEMM (11 MB per audio-second fewer); ``output_dense`` stays a Linear.
- **The encoder layer**: :mod:`embench_plugins.fused_layers`.

On CUDA in bf16/fp16 the operators run Triton kernels; on the CPU and in fp32 they run their
reference implementations, so the routes give the module's result to float rounding on any
device (tested against the modules; the kernels against the references under Triton's
interpreter). Only models this exactly describes are routed: exact-erf GELU activations, a
per-channel GroupNorm first layer with one input channel, later layers without norms or
padding. Others keep their modules (MERT-330M's LayerNorm CNN: ``gemm_features`` handles it).

Only inference takes these routes (``fast_conv.wrap_inference``); fine-tuning keeps the
modules. Not forced by default, since no GPU has timed them yet: ``auto`` (the default) times
them on CUDA against the modules and takes them where they are faster and agree
(:mod:`embench_plugins.route_choice`); ``benchmarks/gpu_variants.py`` times each route.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from embench_plugins.fast_conv import compute_dtype, parameter_state, wrap_inference
from embench_plugins.folded_norm import COLUMNS, foldable, folded_filters

if TYPE_CHECKING:
    import torch

    from embench_plugins import route_choice

FFN_MODES = ("auto", "module", "fused")
#: Zero rows after each channels-last buffer: a conv's last output row reads ``kernel -
#: stride`` rows past its window's block (a junk row: never a valid output).
SLACK = 8
#: What a Wav2Vec2/HuBERT ``FeedForward`` block has; blocks with these and an exact GELU fuse.
FEED_FORWARD_PARTS = ("intermediate_dense", "output_dense", "intermediate_dropout",
                      "output_dropout")


def exact_gelu(module: object) -> bool:
    """Whether ``module`` is the erf GELU the kernels compute (transformers' ``"gelu"``)."""
    import torch

    if isinstance(module, torch.nn.GELU):
        return module.approximate == "none"
    return type(module).__name__ == "GELUActivation" and getattr(
        module, "act", None) is torch.nn.functional.gelu


def supports_features(encoder: torch.nn.Module) -> bool:
    """A group-norm wav2vec2/HuBERT CNN: a foldable first layer, later layers plain convs
    (no norm, padding, dilation or groups) whose reach past a block fits :data:`SLACK`."""
    import torch

    layers = list(getattr(encoder, "conv_layers", []))
    if not layers or not foldable(layers[0]):
        return False
    for i, layer in enumerate(layers):
        conv = layer.conv
        if not exact_gelu(getattr(layer, "activation", None)):
            return False
        if i and (getattr(layer, "layer_norm", None) is not None
                  or not isinstance(conv, torch.nn.Conv1d) or conv.groups != 1
                  or conv.padding != (0,) or conv.dilation != (1,)
                  or conv.in_channels != layers[i - 1].conv.out_channels
                  or conv.kernel_size[0] - conv.stride[0] > SLACK):
            return False
    return True


class _WeightCache:
    """A conv weight as the GEMM's ``[kernel * C_in, C_out]`` operand (rows ordered tap,
    channel, like the overlapping A rows), recomputed when the parameter or dtype changes."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: torch.Tensor | None = None

    def get(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        import torch

        if torch.compiler.is_compiling():  # a graph computes it; the lookup would break it
            return _gemm_operand(weight, dtype)
        key = (parameter_state([weight]), dtype)
        if key != self.key:
            self.value, self.key = _gemm_operand(weight, dtype), key
        return self.value


def _gemm_operand(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    out_channels, in_channels, kernel = weight.shape
    return weight.permute(2, 1, 0).reshape(kernel * in_channels, out_channels).to(
        dtype).contiguous()


def features(encoder: torch.nn.Module, wave: torch.Tensor,
             caches: list[_WeightCache] | None = None) -> torch.Tensor:
    """``encoder(wave)`` (``[B, T]`` -> ``[B, C, frames]``) through the fused operators; a
    transposed view of the last channels-last buffer, like ``gemm_features.features``."""
    import torch

    from embench_plugins import fused_ops  # noqa: F401  (registers torch.ops.embench)

    layers = list(encoder.conv_layers)
    convs = [layer.conv for layer in layers]
    caches = caches or weight_caches(encoder)
    first = convs[0]
    kernel, stride = first.kernel_size[0], first.stride[0]
    dtype = compute_dtype(wave, first.weight.dtype)
    batch, samples = wave.shape
    valid = (samples - kernel) // stride + 1
    if valid < 1:
        raise ValueError(f"{samples} samples are shorter than the first conv's kernel")
    later = math.prod([c.stride[0] for c in convs[1:]])  # a list: dynamo can't trace a genexpr
    rows = -(-valid // later) * later  # every later layer's rows divide exactly
    with torch.autocast(wave.device.type, enabled=False):
        filters_k, shift = folded_filters(wave.unfold(-1, kernel, stride), first,
                                          layers[0].layer_norm)
        filters = wave.new_zeros(batch, COLUMNS, first.out_channels, dtype=dtype)
        filters[:, :kernel] = filters_k.transpose(1, 2).to(dtype)
        x = torch.ops.embench.first_layer_act(wave.to(dtype).contiguous(), filters,
                                              shift.float(), stride, rows, SLACK, True)
        for conv, cache in zip(convs[1:], caches[1:], strict=True):
            k, s = conv.kernel_size[0], conv.stride[0]
            bias = None if conv.bias is None else conv.bias.to(dtype)
            rows //= s
            x = torch.ops.embench.gemm_act(x, cache.get(conv.weight, dtype), bias,
                                           s * conv.in_channels, batch * rows, SLACK, True)
            valid = (valid - k) // s + 1
            if valid < 1:
                raise ValueError(f"{samples} samples are too few for every conv layer")
    channels = x.shape[1]
    return x[:batch * rows].view(batch, rows, channels)[:, :valid].transpose(1, 2)


def install_features(model: torch.nn.Module) -> bool:
    """Route ``model.feature_extractor`` through :func:`features` at inference, if
    :func:`supports_features`; returns whether it did."""
    encoder = getattr(model, "feature_extractor", None)
    if encoder is None or not supports_features(encoder):
        return False
    caches = weight_caches(encoder)
    wrap_inference(encoder, lambda wave: features(encoder, wave, caches), "embench_fused")
    return True


def weight_caches(encoder: torch.nn.Module) -> list[_WeightCache]:
    """One GEMM-operand cache per conv layer of ``encoder``, for :func:`features`."""
    return [_WeightCache() for _ in encoder.conv_layers]


def feed_forward(ff: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """A Wav2Vec2/HuBERT ``FeedForward`` with ``intermediate_dense`` + GELU as one operator
    (dropouts kept, so a module left in train mode behaves the same)."""
    import torch

    from embench_plugins import fused_ops  # noqa: F401  (registers torch.ops.embench)

    dense = ff.intermediate_dense
    dtype = compute_dtype(hidden, dense.weight.dtype)
    width = hidden.shape[-1]
    with torch.autocast(hidden.device.type, enabled=False):
        flat = hidden.reshape(-1, width).to(dtype).contiguous()
        bias = None if dense.bias is None else dense.bias.to(dtype)
        mid = torch.ops.embench.gemm_act(flat, dense.weight.to(dtype).t(), bias, width,
                                         flat.shape[0], 0, True)
    mid = ff.intermediate_dropout(mid.view(*hidden.shape[:-1], dense.out_features))
    return ff.output_dropout(ff.output_dense(mid))


def install_ffn(model: torch.nn.Module, mode: str | None = None) -> list[str]:
    """Route every feed-forward block with an exact GELU through :func:`feed_forward` at
    inference (``fused``), or (``auto``, the default) through whichever of that and the
    module one :class:`route_choice.RouteChoice`, shared by all blocks, times fastest on CUDA
    (the module elsewhere). ``EMBENCH_FFN`` (one of :data:`FFN_MODES`) overrides ``mode``;
    returns the names of the wrapped blocks."""
    from embench_plugins import route_choice

    mode = mode or os.environ.get("EMBENCH_FFN", FFN_MODES[0])
    if mode not in FFN_MODES:
        raise ValueError(f"EMBENCH_FFN must be one of {', '.join(FFN_MODES)}, not {mode!r}")
    if mode == "module":
        return []
    choice = None
    if mode == "auto":  # candidates take (hidden, block, the block's own forward)
        choice = route_choice.RouteChoice(
            "FFN first Linear + GELU",
            {"module": lambda h, block, own: own(h),
             "fused": lambda h, block, own: feed_forward(block, h)}, "module")
    wrapped = []
    for name, module in model.named_modules():
        if not (all(hasattr(module, a) for a in FEED_FORWARD_PARTS)
                and exact_gelu(getattr(module, "intermediate_act_fn", None))):
            continue
        if wrap_inference(module, _ffn_route(module, choice), "embench_fused_ffn"):
            wrapped.append(name)
    if choice is not None and wrapped:
        route_choice.attach(model, choice)
    return wrapped


def _ffn_route(block: torch.nn.Module, choice: route_choice.RouteChoice | None):
    """The inference forward of one feed-forward ``block``: fused, or ``choice``'s pick."""
    if choice is None:
        return lambda h: feed_forward(block, h)
    own = block.forward
    return lambda h: choice(h, block, own)
