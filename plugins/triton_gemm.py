"""Triton kernels that write a layer's output once, activation (or norm) included.

Why: ``benchmarks/roofline.py`` counts that, run as one kernel per op, a fifth of MERT-95M's
bytes are GELU passes and the CNN feature encoder's convolutions run off the GEMM path. A GEMM
whose epilogue adds the bias and applies the exact (erf) GELU before the single store removes
the pass; a strided convolution on a channels-last buffer is the same GEMM with an A operand
whose rows overlap (see :func:`gemm_act`), so one kernel serves the CNN's layers and the FFN.

- :func:`gemm_act`: ``C[m, n] = act(sum_k A[m, k] B[k, n] + bias[n])`` where
  ``A[m, k] = a.flatten()[m * lda + k]``. With ``lda = K`` that is a plain matrix; with
  ``lda = stride * channels`` and ``K = kernel * channels`` it is a convolution of kernel
  ``kernel`` and stride ``stride`` over a ``[rows, channels]`` buffer, no gather.
- :func:`first_layer_act`: the first CNN layer from the waveform: ``out[b, t, c] =
  act(sum_j wave[b, stride * t + j] F[b, j, c] + shift[b, c])`` with per-window filters
  (``folded_norm``'s folded GroupNorm), reading the taps straight from the audio.

Both accumulate in fp32 and return ``rows + slack`` rows whose last ``slack`` rows are zero,
so the next convolution's last taps read zeros, never memory past the buffer.

- :func:`add_layer_norm`: ``LayerNorm(x + y)``, a post-LN transformer's residual add and the
  norm after it as one read of each input and one write (``fused_layers``).

Kernels are imported on first use (``triton`` is imported lazily; the CPU never needs it).
The test suite runs them on the CPU through Triton's interpreter (:func:`interpreting`; fp32
and fp16: the interpreter's bf16 ``dot`` is wrong, checked with triton 3.6); on CUDA each is
autotuned once per shape family (the GEMM's ``N``, ``K``, ``lda``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Tile settings the interpreter runs with (small, so masked edges are exercised).
INTERPRET_GEMM = {"BM": 32, "BN": 32, "BK": 32, "GROUP_M": 2}
INTERPRET_FIRST = {"BT": 32, "BC": 32}
INTERPRET_ADD_NORM = {"BM": 4}


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter: ``TRITON_INTERPRET=1`` must be set
    before ``triton`` is first imported (its own helpers are decorated then), so the tests run
    the kernels in a child process that sets it."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def kernels() -> SimpleNamespace:
    """The kernels of :mod:`embench_plugins.triton_kernels`: autotuned on a GPU, plain under
    the interpreter (which cannot time configs)."""
    from embench_plugins import triton_kernels as module

    if interpreting():
        return SimpleNamespace(gemm=module.gemm, first=module.first, add_norm=module.add_norm,
                               tuned=False)
    return SimpleNamespace(gemm=module.gemm_tuned, first=module.first_tuned,
                           add_norm=module.add_norm_tuned, tuned=True)


def launcher(name: str, config: Mapping[str, int] | None,
             interpreted: Mapping[str, int]) -> tuple[Any, dict[str, int]]:
    """Kernel ``name`` of :func:`kernels` and the tiles to launch it with: ``config`` if given
    (fixed tiles skip the autotuner), the interpreter's ``interpreted`` tiles there, else none
    (the autotuner picks)."""
    ks = kernels()
    kernel = getattr(ks, name)
    tiles = dict(config or ({} if ks.tuned else interpreted))
    return (kernel.fn if (tiles and ks.tuned) else kernel), tiles


def check_reach(numel: int, width: int, lda: int, rows: int) -> None:
    """Refuse A rows that would read past a buffer of ``numel`` elements (the operator's
    reference and the kernel share this contract)."""
    if rows and (rows - 1) * lda + width > numel:
        raise ValueError(f"gemm_act: {rows} rows of stride {lda} and width {width} reach past a "
                         f"buffer of {numel} elements; give the buffer slack rows")


def slack_output(rows: int, slack: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``[rows + slack, width]`` output whose ``slack`` last rows are zero."""
    import torch

    out = torch.empty(rows + slack, width, dtype=like.dtype, device=like.device)
    if slack:
        out[rows:].zero_()
    return out


def gemm_act(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, lda: int,
             rows: int, slack: int = 0, gelu: bool = True,
             config: Mapping[str, int] | None = None) -> torch.Tensor:
    """``act(A @ b + bias)`` with ``A[m, k] = a.flatten()[m * lda + k]`` for ``m < rows``,
    ``k < K = b.shape[0]``; ``[rows + slack, N]`` in ``a``'s dtype, the last ``slack`` rows
    zero. ``b`` is ``[K, N]`` with any strides (a Linear weight's ``.t()`` needs no copy).
    ``config`` fixes the tiles (the interpreter's default: :data:`INTERPRET_GEMM`)."""
    import triton

    if not a.is_contiguous():
        raise ValueError("gemm_act needs a contiguous A buffer")
    if b.dtype != a.dtype:
        raise ValueError(f"gemm_act: A is {a.dtype}, B is {b.dtype}")
    k, n = b.shape
    check_reach(a.numel(), k, lda, rows)
    out = slack_output(rows, slack, n, a)
    if rows == 0:
        return out
    launch, tiles = launcher("gemm", config, INTERPRET_GEMM)

    def grid(meta: Mapping[str, int]) -> tuple[int]:
        return (triton.cdiv(rows, meta["BM"]) * triton.cdiv(n, meta["BN"]),)

    launch[grid](a, b, bias if bias is not None else a, out, rows, n, lda, b.stride(0),
                 b.stride(1), K=k, HAS_BIAS=bias is not None, GELU=gelu, **tiles)
    return out


def first_layer_act(wave: torch.Tensor, filters: torch.Tensor, shift: torch.Tensor,
                    stride: int, rows: int, slack: int = 0, gelu: bool = True,
                    config: Mapping[str, int] | None = None) -> torch.Tensor:
    """``act(sum_j wave[b, stride * t + j] filters[b, j, c] + shift[b, c])`` for ``t < rows``
    as ``[batch * rows + slack, C]`` in ``wave``'s dtype (taps past the audio read zero).
    ``filters`` ``[B, taps, C]`` (``taps`` a power of two >= 16, zero past the kernel) in the
    same dtype, ``shift`` ``[B, C]`` fp32."""
    import torch
    import triton

    batch, samples = wave.shape
    _, taps, channels = filters.shape
    if taps < 16 or taps & (taps - 1):
        raise ValueError(f"first_layer_act: taps must be a power of two >= 16, not {taps}")
    wave, filters = wave.contiguous(), filters.contiguous()
    shift = shift.to(torch.float32).contiguous()
    out = slack_output(batch * rows, slack, channels, wave)
    if batch * rows == 0:
        return out
    launch, tiles = launcher("first", config, INTERPRET_FIRST)

    def grid(meta: Mapping[str, int]) -> tuple[int, int, int]:
        return triton.cdiv(rows, meta["BT"]), triton.cdiv(channels, meta["BC"]), batch

    launch[grid](wave, filters, shift, out, samples, rows, channels, STRIDE=stride, TAPS=taps,
                 GELU=gelu, **tiles)
    return out


def add_layer_norm(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float, config: Mapping[str, int] | None = None) -> torch.Tensor:
    """``LayerNorm(x + y)`` over the last dim of ``[M, N]`` ``x`` and ``y`` (the residual add
    and the norm after it, as one read of each and one write), in ``x``'s dtype; the sum is
    fp32 and never stored. ``weight`` and ``bias`` ``[N]``, any float dtype."""
    import triton

    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"add_layer_norm: x {tuple(x.shape)} and y {tuple(y.shape)} must be "
                         f"the same [rows, width]")
    x, y = x.contiguous(), y.contiguous()
    rows, width = x.shape
    out = slack_output(rows, 0, width, x)
    if rows == 0:
        return out
    launch, tiles = launcher("add_norm", config, INTERPRET_ADD_NORM)

    def grid(meta: Mapping[str, int]) -> tuple[int]:
        return (triton.cdiv(rows, meta["BM"]),)

    launch[grid](x, y, weight.contiguous(), bias.contiguous(), out, rows, width, float(eps),
                 BN=triton.next_power_of_2(width), **tiles)
    return out
