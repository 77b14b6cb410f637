"""``torch.ops.embench.gemm_act``, ``first_layer_act`` and ``add_layer_norm``: the fused
kernels of :mod:`embench_plugins.triton_gemm` as PyTorch operators.

Why operators rather than plain calls: the dispatcher picks the implementation by device (Triton
on CUDA for bf16/fp16, the reference below on the CPU and for fp32, so ``--precision fp32``
keeps IEEE products everywhere), ``torch.compile`` traces them as opaque nodes through their
fake (shape-only) implementations, and ``torch.utils.flop_counter`` and
``benchmarks/roofline.py`` see each one as a single kernel with its FLOPs registered here.

The reference implementations define the semantics (see :mod:`triton_gemm`): the GEMM's A
operand is an ``as_strided`` view whose rows may overlap (a convolution), the output has
``slack`` zero rows at the end. No ``from __future__ import annotations`` here: the operator
schemas are inferred from these annotations.
"""

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from embench_plugins import triton_gemm  # launchers only: triton is imported on first launch

LOW_PRECISION = (torch.bfloat16, torch.float16)


def gemm_act_reference(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, lda: int,
                       rows: int, slack: int, gelu: bool) -> torch.Tensor:
    """``act(A @ b + bias)``, ``A[m, k] = a.flatten()[m * lda + k]``, as ``[rows + slack, N]``
    with zero slack rows (the reference: ``mm`` on the strided view, then ``gelu``)."""
    k, n = b.shape
    triton_gemm.check_reach(a.numel(), k, lda, rows)
    flat = a.contiguous().reshape(-1)
    view = torch.as_strided(flat, (rows, k), (lda, 1))
    out = triton_gemm.slack_output(rows, slack, n, a)
    if bias is None:
        torch.mm(view, b, out=out[:rows])
    else:
        torch.addmm(bias, view, b, out=out[:rows])
    if gelu:
        out[:rows] = F.gelu(out[:rows])
    return out


gemm_act = torch.library.custom_op("embench::gemm_act", mutates_args=())(gemm_act_reference)


@gemm_act.register_kernel("cuda")
def _gemm_act_cuda(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, lda: int,
                   rows: int, slack: int, gelu: bool) -> torch.Tensor:
    if a.dtype not in LOW_PRECISION:
        return gemm_act_reference(a, b, bias, lda, rows, slack, gelu)
    return triton_gemm.gemm_act(a.contiguous(), b, bias, lda, rows, slack, gelu)


@gemm_act.register_fake
def _gemm_act_fake(a, b, bias, lda, rows, slack, gelu):
    return a.new_empty(rows + slack, b.shape[1])


@register_flop_formula(torch.ops.embench.gemm_act)
def _gemm_act_flops(a, b, bias, lda, rows, slack, gelu, *args, out_val=None, **kwargs) -> int:
    """flop_counter passes tensors' shapes."""
    return 2 * rows * b[0] * b[1]


def first_layer_act_reference(wave: torch.Tensor, filters: torch.Tensor, shift: torch.Tensor,
                              stride: int, rows: int, slack: int, gelu: bool) -> torch.Tensor:
    """``act(sum_j wave[b, stride * t + j] filters[b, j, c] + shift[b, c])`` for ``t < rows``
    as ``[batch * rows + slack, C]`` (taps past the audio read zero; the reference gathers
    them with ``unfold`` and runs one ``bmm``)."""
    batch, samples = wave.shape
    taps, channels = filters.shape[1:]
    need = (rows - 1) * stride + taps
    padded = F.pad(wave, (0, max(0, need - samples)))
    frames = padded.unfold(-1, taps, stride)[:, :rows]  # [B, rows, taps]
    out = triton_gemm.slack_output(batch * rows, slack, channels, wave)
    main = out[:batch * rows].view(batch, rows, channels)
    torch.bmm(frames, filters.to(wave.dtype), out=main)
    main += shift.to(wave.dtype).unsqueeze(1)
    if gelu:
        main.copy_(F.gelu(main))
    return out


first_layer_act = torch.library.custom_op("embench::first_layer_act",
                                          mutates_args=())(first_layer_act_reference)


@first_layer_act.register_kernel("cuda")
def _first_layer_act_cuda(wave: torch.Tensor, filters: torch.Tensor, shift: torch.Tensor,
                          stride: int, rows: int, slack: int, gelu: bool) -> torch.Tensor:
    if wave.dtype not in LOW_PRECISION:
        return first_layer_act_reference(wave, filters, shift, stride, rows, slack, gelu)
    return triton_gemm.first_layer_act(wave, filters, shift, stride, rows, slack, gelu)


@first_layer_act.register_fake
def _first_layer_act_fake(wave, filters, shift, stride, rows, slack, gelu):
    return wave.new_empty(wave.shape[0] * rows + slack, filters.shape[2])


@register_flop_formula(torch.ops.embench.first_layer_act)
def _first_layer_act_flops(wave, filters, shift, stride, rows, slack, gelu, *args,
                           out_val=None, **kwargs) -> int:
    return 2 * wave[0] * rows * filters[1] * filters[2]  # shapes, as for gemm_act


def add_layer_norm_reference(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                             bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``LayerNorm(x + y)`` over the last dim of ``[M, N]`` tensors, summed in fp32, returned
    in ``x``'s dtype (the residual stream's: fp32 under autocast, bf16 with bf16 weights),
    as a post-LN transformer layer's ``layer_norm(residual + branch)``."""
    total = x.float() + y.float()
    return F.layer_norm(total, (total.shape[-1],), weight.float(), bias.float(), eps).to(x.dtype)


add_layer_norm = torch.library.custom_op("embench::add_layer_norm",
                                         mutates_args=())(add_layer_norm_reference)


@add_layer_norm.register_kernel("cuda")
def _add_layer_norm_cuda(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype not in LOW_PRECISION and y.dtype not in LOW_PRECISION:
        return add_layer_norm_reference(x, y, weight, bias, eps)
    return triton_gemm.add_layer_norm(x, y, weight, bias, eps)


@add_layer_norm.register_fake
def _add_layer_norm_fake(x, y, weight, bias, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)
