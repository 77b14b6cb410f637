"""The Triton kernels behind :mod:`embench_plugins.triton_gemm` (which documents them and is
the only module that imports this one; importing it needs ``triton``).

Module level, because Triton resolves a kernel's names through its module globals, and
``triton_gemm`` imports this file a second time under another name for the interpreter. That
copy can call the helpers defined here but none of ``triton.language``'s own jitted helpers
(``tl.cdiv``, ...), which were decorated for the GPU when triton was imported.
"""

from __future__ import annotations

import inspect

import triton
import triton.language as tl

#: Hopper-sized GEMM tiles (BM, BN, BK, warps, stages): the Triton matmul tutorial's, trimmed
#: so that the first call of a shape family tunes in seconds.
GEMM_TILES = [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (64, 128, 64, 4, 4),
              (128, 64, 64, 4, 4)]
#: First-layer tiles (BT frames, BC channels, warps).
FIRST_TILES = [(128, 128, 4), (64, 256, 4), (128, 256, 8)]
#: Residual add + LayerNorm: rows per program, warps (a row is one power-of-two block).
ADD_NORM_TILES = [(1, 4), (2, 4), (4, 4), (4, 8), (8, 8)]


@triton.jit
def _act(x, GELU: tl.constexpr):
    if GELU:
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    return x


@triton.jit
def gemm(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, lda, stride_bk, stride_bn,
         K: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    """``C[m, n] = act(sum_k A[m * lda + k] B[k, n] + bias[n])``. ``K`` is a compile-time
    constant: a layer has one width, and the interpreter (numpy >= 2.4) needs a Python int as
    the loop bound."""
    pid = tl.program_id(0)
    num_m = (M + BM - 1) // BM  # not tl.cdiv: a jitted helper of triton's own, which the
    num_n = (N + BN - 1) // BN  # interpreter copy cannot call (see the module docstring)
    per_group = GROUP_M * num_n  # neighbouring programs share B tiles in L2
    first_m = (pid // per_group) * GROUP_M
    group_m = min(num_m - first_m, GROUP_M)
    pm = first_m + (pid % per_group) % group_m
    pn = (pid % per_group) // group_m
    rm = pm * BM + tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    row_ok = rm < M
    col_ok = rn < N
    a_rows = a_ptr + rm.to(tl.int64)[:, None] * lda
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        k_ok = kk < K
        a = tl.load(a_rows + kk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + kk[:, None] * stride_bk + rn[None, :] * stride_bn,
                    mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    acc = _act(acc, GELU)
    out = c_ptr + rm.to(tl.int64)[:, None] * N + rn[None, :]
    tl.store(out, acc.to(c_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def first(wave_ptr, filt_ptr, shift_ptr, out_ptr, samples, rows, C,
          STRIDE: tl.constexpr, TAPS: tl.constexpr, GELU: tl.constexpr,
          BT: tl.constexpr, BC: tl.constexpr):
    """``out[b, t, c] = act(sum_j wave[b, STRIDE t + j] filt[b, j, c] + shift[b, c])``."""
    b = tl.program_id(2).to(tl.int64)
    rt = tl.program_id(0) * BT + tl.arange(0, BT)
    rc = tl.program_id(1) * BC + tl.arange(0, BC)
    rj = tl.arange(0, TAPS)
    t_ok = rt < rows
    c_ok = rc < C
    index = rt[:, None] * STRIDE + rj[None, :]
    taps = tl.load(wave_ptr + b * samples + index, mask=t_ok[:, None] & (index < samples),
                   other=0.0)
    filt = tl.load(filt_ptr + b * TAPS * C + rj[:, None] * C + rc[None, :],
                   mask=c_ok[None, :], other=0.0)
    acc = tl.dot(taps, filt)
    acc += tl.load(shift_ptr + b * C + rc, mask=c_ok, other=0.0)[None, :]
    acc = _act(acc, GELU)
    out = out_ptr + (b * rows + rt)[:, None] * C + rc[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=t_ok[:, None] & c_ok[None, :])


@triton.jit
def add_norm(x_ptr, y_ptr, w_ptr, b_ptr, out_ptr, M, N, eps,
             BM: tl.constexpr, BN: tl.constexpr):
    """``out = LayerNorm(x + y) * w + b`` over rows of ``N``: the sum is formed in fp32 and
    never stored; ``x`` and ``y`` may differ in dtype, ``out`` has its own."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.arange(0, BN)
    c_ok = cols < N
    ok = (rows[:, None] < M) & c_ok[None, :]
    offs = rows[:, None] * N + cols[None, :]
    total = (tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
             + tl.load(y_ptr + offs, mask=ok, other=0.0).to(tl.float32))
    mean = tl.sum(total, axis=1) / N
    centred = tl.where(ok, total - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / N + eps)
    w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=c_ok, other=0.0).to(tl.float32)
    out = centred * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=ok)


#: Autotune timings kept on disk across runs, where this triton's autotune offers it (3.6 does).
_CACHE = ({"cache_results": True}
          if "cache_results" in inspect.signature(triton.autotune).parameters else {})
gemm_tuned = triton.autotune(
    [triton.Config({"BM": bm, "BN": bn, "BK": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
     for bm, bn, bk, w, s in GEMM_TILES],
    key=["N", "K", "lda"], **_CACHE)(gemm)
first_tuned = triton.autotune(
    [triton.Config({"BT": bt, "BC": bc}, num_warps=w) for bt, bc, w in FIRST_TILES],
    key=["C", "STRIDE"], **_CACHE)(first)
add_norm_tuned = triton.autotune(
    [triton.Config({"BM": bm}, num_warps=w) for bm, w in ADD_NORM_TILES],
    key=["N"], **_CACHE)(add_norm)
