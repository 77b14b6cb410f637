"""benchmarks/roofline.py counts what it claims: FLOPs and bytes per op, views free, floors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roofline  # noqa: E402


def _record(fn, model: torch.nn.Module | None = None) -> list[roofline.OpRecord]:
    scopes = roofline.ModuleScopes(model or torch.nn.Identity())
    with torch.inference_mode(), scopes, roofline.Recorder(scopes) as recorder:
        fn()
    return recorder.records


def test_unique_bytes_counts_broadcast_dimensions_once():
    t = torch.zeros(4, 1, dtype=torch.bfloat16).expand(4, 100)
    assert roofline.unique_bytes(t) == 4 * 2
    assert roofline.unique_bytes(torch.zeros(3, 5)) == 60


def test_a_matrix_product_counts_its_flops_and_each_tensor_once():
    a = torch.randn(64, 32, dtype=torch.bfloat16)
    b = torch.randn(32, 16, dtype=torch.bfloat16)
    [record] = _record(lambda: a @ b)
    assert record.flops == 2 * 64 * 32 * 16
    assert record.bytes == (64 * 32 + 32 * 16 + 64 * 16) * 2
    assert record.matrix


def test_views_dropout_and_allocations_move_nothing_and_composites_show_their_kernels():
    x = torch.randn(8, 6)
    layer = torch.nn.Linear(6, 4)
    records = _record(lambda: (x.t().reshape(6, 8), F.dropout(x, 0.5, training=False),
                               x.new_empty(1000), layer(x)))
    # linear -> addmm; views, eval-mode dropout and allocations move nothing
    assert [r.op for r in records] == ["addmm"]
    assert records[0].flops == 2 * 8 * 6 * 4 and not records[0].matrix


def test_ops_are_named_after_the_innermost_module():
    model, x = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU()), torch.randn(2, 4)
    records = _record(lambda: model(x), model)
    assert [(r.scope, r.op) for r in records] == [("0", "addmm"), ("1", "gelu")]


def test_the_floor_is_the_slower_of_arithmetic_and_memory():
    card = (100.0, 10.0, 1.0)  # 100 TFLOP/s matrix, 10 fp32, 1 TB/s
    records = [roofline.OpRecord("encoder.layers.0.feed_forward.intermediate_dense", "addmm",
                                 10**12, 10**9, True),  # 10 ms of math, 1 ms of bytes
               roofline.OpRecord("encoder.layers.0.feed_forward", "gelu", 0, 10**10, True)]
    rows = {r.group: r for r in roofline.summarise(records, audio_s=2.0, card=card)}
    assert rows["FFN GEMMs"].floor_s == pytest.approx(0.01 / 2)
    assert rows["FFN GEMMs"].memory_bound_s == 0
    assert rows["FFN activation"].floor_s == pytest.approx(0.01 / 2)
    assert rows["FFN activation"].memory_bound_s == pytest.approx(0.01 / 2)


@pytest.mark.slow
def test_real_size_mert_flops_agree_with_the_flop_counter(capsys):
    """The recorder's FLOPs for a real MERT-95M batch (the figure benchmarks/gpu.py reports)
    match torch's own FlopCounterMode, counted independently, plus the CPU attention kernel's,
    which FlopCounterMode does not know: 4 * L^2 * width per layer and window; and the script
    prints the floor."""
    from torch.utils.flop_counter import FlopCounterMode

    from embench.plugins import get_registry

    records, audio_s = roofline.record_batch("mert-v1-95m", 2, "fp32")
    attention = sum(r.flops for r in records if "attention" in r.op) / audio_s
    frames, width, layers, window_s = 375, 768, 12, 5.0
    assert attention == pytest.approx(layers * 4 * frames**2 * width / window_s, rel=0.01)
    ours = sum(r.flops for r in records) / audio_s - attention
    encoder = get_registry().encoder("mert-v1-95m")
    encoder.load(torch.device("cpu"), "random")
    counter = FlopCounterMode(display=False)
    # no_grad, not inference_mode: weight-norm parametrisations fail under the flop counter
    with torch.no_grad(), counter:
        encoder.forward(torch.zeros(2, int(window_s * encoder.info.sample_rate)))
    theirs = counter.get_total_flops() / (2 * window_s)
    assert ours == pytest.approx(theirs, rel=0.001)
    assert roofline.main(["--windows", "1"]) == 0
    assert "audio-s/s at most" in capsys.readouterr().out
