"""The Triton kernels compute what their operators' reference implementations define, run on
the CPU in Triton's interpreter (a child process: see ``triton_interpreter_checks.py``).

Skipped where triton is not installed, unless ``EMBENCH_REQUIRE_TRITON=1`` (CI sets it and
installs triton), which turns a missing triton into a failure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("EMBENCH_REQUIRE_TRITON") != "1":
    pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parent.parent
#: Relative L2 error against the fp32 reference on the same rounded inputs: fp32 accumulation
#: of fp32 inputs lands far under 1e-5; fp16 outputs carry their own rounding (~5e-4).
TOLERANCE = {"float32": 1e-5, "float16": 2e-3,
             "bfloat16": 5e-4}  # against the reference rounded to bf16 the way the kernel does


@pytest.fixture(scope="module")
def results() -> dict[str, float]:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "triton_interpreter_checks.py")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


CASES = [f"{case} {dtype}" for dtype in ("float32", "float16")  # bf16 dot: wrong there
         for case in ("conv k3", "conv k2", "linear gelu=True", "linear gelu=False",
                      "first layer")]
CASES += [f"{case} {dtype}" for dtype in TOLERANCE
          for case in ("add norm", "add norm fp32 residual")]


@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_its_reference(results, case):
    error = results[case]
    assert not math.isnan(error), f"{case}: an output element was never written"
    assert error < TOLERANCE[case.rsplit(" ", 1)[1]], f"{case}: relative error {error:.2e}"


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith(("conv", "first"))])
def test_kernel_leaves_zero_slack_rows(results, case):
    assert results[f"{case} slack zero"] == 0.0


# The same kernels compiled for an H100 (sm_90) by the ptxas that ships with triton: no GPU
# needed. The JIT specialises pointers and integers divisible by 16 (and integers equal to 1)
# at launch; the attributes below say the same, for the shapes the routes launch.
GEMM_ARGS = ["a_ptr", "b_ptr", "bias_ptr", "c_ptr", "M", "N", "lda", "stride_bk", "stride_bn"]


def _compile_gemm(kernel: int, width: int, linear: bool, tiles: tuple[int, ...]):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from embench_plugins import triton_kernels

    bm, bn, bk, warps, stages = tiles
    signature = {name: ("*bf16" if name.endswith("ptr") else "i32") for name in GEMM_ARGS}
    constants = {"K": kernel * width, "HAS_BIAS": linear, "GELU": True, "BM": bm, "BN": bn,
                 "BK": bk, "GROUP_M": 8}
    unit, strided = ("stride_bk", "stride_bn") if linear else ("stride_bn", "stride_bk")
    constants[unit] = 1
    signature.update(dict.fromkeys(constants, "constexpr"))
    aligned = ["a_ptr", "b_ptr", "bias_ptr", "c_ptr", "N", "lda", strided]
    attrs = {(GEMM_ARGS.index(name),): [["tt.divisibility", 16]] for name in aligned}
    source = ASTSource(triton_kernels.gemm, signature, constants, attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": warps, "num_stages": stages})


@pytest.mark.parametrize(("kernel", "width", "linear"), [(3, 512, False), (1, 768, True)])
def test_gemm_compiles_for_hopper_with_wgmma_and_pipelined_loads(kernel, width, linear):
    """Each autotuned tile shape compiles for sm_90 to warp-group MMAs (``wgmma``) fed by
    asynchronous copies: the Hopper fast path, not a synchronous load per K step."""
    from embench_plugins import triton_kernels

    for tiles in triton_kernels.GEMM_TILES:
        compiled = _compile_gemm(kernel, width, linear, tiles)
        ptx = compiled.asm["ptx"]
        assert "wgmma.mma_async" in ptx, tiles
        assert "cp.async" in ptx, tiles
        assert compiled.metadata.shared <= 227 * 1024, tiles  # an H100 block's shared memory


def test_first_layer_kernel_compiles_for_hopper_with_wgmma():
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from embench_plugins import triton_kernels

    args = ["wave_ptr", "filt_ptr", "shift_ptr", "out_ptr", "samples", "rows", "C"]
    for bt, bc, warps in triton_kernels.FIRST_TILES:
        signature = {"wave_ptr": "*bf16", "filt_ptr": "*bf16", "shift_ptr": "*fp32",
                     "out_ptr": "*bf16", "samples": "i32", "rows": "i32", "C": "i32"}
        constants = {"STRIDE": 5, "TAPS": 16, "GELU": True, "BT": bt, "BC": bc}
        signature.update(dict.fromkeys(constants, "constexpr"))
        attrs = {(args.index(name),): [["tt.divisibility", 16]]
                 for name in ("wave_ptr", "filt_ptr", "shift_ptr", "out_ptr", "C")}
        compiled = triton.compile(ASTSource(triton_kernels.first, signature, constants, attrs),
                                  target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        assert "wgmma.mma_async" in compiled.asm["ptx"], (bt, bc, warps)


def test_add_norm_kernel_compiles_for_hopper_at_every_tile():
    """Each autotuned row block of the residual add + LayerNorm compiles for sm_90 with a bf16
    residual and branch, at MERT-95M's width (768, a 1,024 block) and MERT-330M's (1,024), to
    vectorised loads and stores (a bandwidth-bound kernel lives on them)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from embench_plugins import triton_kernels

    args = ["x_ptr", "y_ptr", "w_ptr", "b_ptr", "out_ptr", "M", "N", "eps"]
    for width in (768, 1024):
        for bm, warps in triton_kernels.ADD_NORM_TILES:
            signature = {name: "*bf16" for name in args[:5]}
            signature.update({"M": "i32", "N": "i32", "eps": "fp32"})
            constants = {"BM": bm, "BN": triton.next_power_of_2(width)}
            signature.update(dict.fromkeys(constants, "constexpr"))
            attrs = {(args.index(name),): [["tt.divisibility", 16]]
                     for name in (*args[:5], "N")}
            compiled = triton.compile(
                ASTSource(triton_kernels.add_norm, signature, constants, attrs),
                target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
            ptx = compiled.asm["ptx"]  # 128-bit accesses: 8 bf16 per thread per load/store
            assert "ld.global.v4.b32" in ptx and "st.global.v4.b32" in ptx, (width, bm, warps)
            # the output rounds to nearest on the GPU (the interpreter truncates instead)
            assert "cvt.rn.bf16x2.f32" in ptx, (width, bm, warps)
