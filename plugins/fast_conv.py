"""1-D convolutions as unfold + matrix multiply, for GPU inference of wav2vec2-style encoders.

Why: on an H200 with bf16, cuDNN runs the positional convolution of MERT / wav2vec 2.0 / HuBERT
(768 channels, kernel 128, 16 groups) with a generic ``implicit_convolve_sgemm`` kernel: 70 ms of
a 200 ms forward pass for 256 five-second windows, for under 1% of the model's FLOPs, and
``cudnn.benchmark`` finds nothing better. Written as "gather every receptive field, then one
batched GEMM", the same arithmetic runs on the tensor cores at GEMM speed; the gather costs one
copy of ``kernel / stride`` times the input, done in batch chunks to bound memory.

Only inference takes this path (no gradient); training keeps the module's own ``forward``, so
fine-tuning is untouched. On the CPU the positional conv is about 3x faster this way than with
oneDNN too (MERT-95M, 2 cores). Results equal ``F.conv1d`` to float rounding (tested). The
parameters and ``state_dict`` do not change: only the instance's ``forward`` is wrapped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Elements of the gathered receptive fields per chunk (2**28 bf16 values = 512 MiB).
CHUNK_ELEMENTS = 2**28


def unfold_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  stride: int = 1, padding: int = 0, groups: int = 1) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, stride, padding, groups=groups)`` for ``x`` ``[B, C, T]``,
    computed as a gather of receptive fields and one batched matmul per batch chunk."""
    import torch
    import torch.nn.functional as F

    if torch.is_autocast_enabled(x.device.type):  # gather in the dtype the GEMM will use
        x = x.to(torch.get_autocast_dtype(x.device.type))
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


def _wrap(conv: torch.nn.Conv1d, how: Callable) -> Callable:
    import torch

    original = conv.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return original(x)
        return how(x, conv.weight, conv.bias, conv.stride[0], conv.padding[0], conv.groups)

    forward.embench_unfold = True  # type: ignore[attr-defined]  # marks it wrapped
    return forward


def install(model: torch.nn.Module, which: str | None = None) -> list[str]:
    """At inference, route the positional convolution through :func:`unfold_conv1d`
    (``which="pos"``, the default); ``"all"`` does the same for the CNN feature encoder's
    convolutions, ``"cl"`` runs those through :func:`channels_last_conv1d` instead.
    ``EMBENCH_UNFOLD_CONV`` (``pos``, ``all``, ``cl``, ``off``) overrides the default. Returns the
    names of the wrapped modules."""
    import torch

    which = which or os.environ.get("EMBENCH_UNFOLD_CONV", "pos")
    if which == "off":
        return []
    if which not in ("pos", "all", "cl"):
        raise ValueError(f"EMBENCH_UNFOLD_CONV must be pos, all, cl or off, not {which!r}")
    wrapped = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Conv1d):
            continue
        if getattr(module.forward, "embench_unfold", False):
            continue
        if "pos_conv_embed" in name or which == "all":
            module.forward = _wrap(module, unfold_conv1d)
        elif which == "cl":
            module.forward = _wrap(module, channels_last_conv1d)
        else:
            continue
        wrapped.append(name)
    return wrapped
