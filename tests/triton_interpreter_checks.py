"""Run the Triton kernels of ``embench_plugins.triton_gemm`` in Triton's CPU interpreter and
print, per case, how far each is from its operator's reference implementation (JSON).

A child process of ``tests/test_triton_kernels.py``: ``TRITON_INTERPRET=1`` has to be set
before triton is first imported. Outputs are filled with NaN before each kernel writes them,
so an element the kernel never writes shows up as NaN.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from embench_plugins import fused_ops, triton_gemm  # noqa: E402


def _poisoned_output(rows, slack, width, like):
    out = torch.full((rows + slack, width), float("nan"), dtype=like.dtype)
    if slack:
        out[rows:].zero_()
    return out


def _truncated(x):
    """fp32 to bf16 by dropping the low 16 bits: how the interpreter (triton 3.6) converts."""
    return (x.float().view(torch.int32) & ~0xFFFF).view(torch.float32).bfloat16()


def _error(got: torch.Tensor, ref: torch.Tensor) -> float:
    if torch.isnan(got).any():
        return float("nan")
    return ((got.double() - ref.double()).norm() / ref.double().norm()).item()


def main() -> int:
    triton_gemm.slack_output = _poisoned_output
    assert triton_gemm.interpreting() and not triton_gemm.kernels().tuned
    gen = torch.Generator().manual_seed(0)
    results = {}
    for dtype in (torch.float32, torch.float16):
        name = str(dtype).split(".")[1]
        # conv kernel 3 / stride 2 with bias, and kernel 2 / stride 2 without, on a buffer of
        # 3 windows x 38 rows of 40 channels (K = 120 / 80: not a multiple of BK = 32)
        for kernel, bias in ((3, True), (2, False)):
            rows, channels, width = 3 * 38, 40, 45
            x = torch.randn(rows + 8, channels, generator=gen).to(dtype)
            x[rows:] = 0
            w = (0.2 * torch.randn(kernel * channels, width, generator=gen)).to(dtype)
            b = torch.randn(width, generator=gen).to(dtype) if bias else None
            args = (x, w, b, 2 * channels, rows // 2, 8, True)
            got = triton_gemm.gemm_act(*args)
            ref = fused_ops.gemm_act_reference(*(t.float() if isinstance(t, torch.Tensor)
                                                 else t for t in args))
            results[f"conv k{kernel} {name}"] = _error(got, ref)
            results[f"conv k{kernel} {name} slack zero"] = float(got[rows // 2:].abs().max())
        # a Linear's transposed weight (strided B), M and N not multiples of the tiles
        a = torch.randn(70, 64, generator=gen).to(dtype)
        lin = (0.1 * torch.randn(97, 64, generator=gen)).to(dtype)
        for gelu in (True, False):
            got = triton_gemm.gemm_act(a, lin.t(), None, 64, 70, 0, gelu)
            ref = fused_ops.gemm_act_reference(a.float(), lin.float().t(), None, 64, 70, 0, gelu)
            results[f"linear gelu={gelu} {name}"] = _error(got, ref)
        # the first layer: 2 windows, taps past the end of the audio
        wave = torch.randn(2, 1003, generator=gen).to(dtype)
        filters = torch.zeros(2, 16, 40, dtype=dtype)
        filters[:, :10] = torch.randn(2, 10, 40, generator=gen).to(dtype)
        shift = torch.randn(2, 40, generator=gen)
        got = triton_gemm.first_layer_act(wave, filters, shift, 5, 201, 3, True)
        ref = fused_ops.first_layer_act_reference(wave.float(), filters.float(), shift, 5, 201,
                                                  3, True)
        results[f"first layer {name}"] = _error(got, ref)
        results[f"first layer {name} slack zero"] = float(got[-3:].abs().max())
    # residual add + LayerNorm: 11 rows (not a multiple of BM = 4) of width 40 (not a power
    # of two), an fp32 residual with a low-precision branch (autocast) and both low; no dot,
    # so bf16 runs correctly in the interpreter too
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        name = str(dtype).split(".")[1]
        x = (3.0 + torch.randn(11, 40, generator=gen)).to(dtype)
        y = torch.randn(11, 40, generator=gen).to(dtype)
        w, b = torch.randn(40, generator=gen), torch.randn(40, generator=gen)
        for label, residual in (("", x), (" fp32 residual", x.float())):
            got = triton_gemm.add_layer_norm(residual, y, w.to(dtype), b.to(dtype), 1e-5)
            assert got.dtype == residual.dtype
            ref = fused_ops.add_layer_norm_reference(residual.float(), y.float(),
                                                     w.to(dtype).float(), b.to(dtype).float(),
                                                     1e-5)
            if got.dtype == torch.bfloat16:  # its one rounding, either way the interpreter does it
                ref = min((ref.bfloat16(), _truncated(ref)), key=lambda r: _error(got, r))
            results[f"add norm{label} {name}"] = _error(got, ref)
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
