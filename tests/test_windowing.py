"""Windows cover long audio without padding; pooling puts frames on one fixed time grid."""

from __future__ import annotations

import pytest
import torch

from embench import windowing
from embench.windowing import FramePooler, n_output_frames, plan_windows


def test_short_clip_is_one_window_of_its_own_length():
    assert [(w.start, w.end) for w in plan_windows(1000, 100, 30.0, None)] == [(0, 1000)]
    assert [(w.start, w.end) for w in plan_windows(1000, 100, None, None)] == [(0, 1000)]


def test_windows_cover_clip_and_last_partial_window_is_end_aligned():
    sr = 10
    windows = plan_windows(125, sr, window_s=5.0, hop_s=None)  # 12.5 s, 5 s windows
    assert [(w.start, w.end) for w in windows] == [(0, 50), (50, 100), (75, 125)]
    assert {w.length for w in windows} == {50}


def test_hop_smaller_than_window():
    windows = plan_windows(100, 10, window_s=4.0, hop_s=2.0)
    assert [w.start for w in windows] == [0, 20, 40, 60]
    assert windows[-1].end == 100


def test_exact_multiple_needs_no_extra_window():
    assert len(plan_windows(300, 10, 10.0, None)) == 3


def _pool(pieces, duration_s, frame_rate):
    """Pool one clip's windows ``(start s, span s, [F, D])`` with the batched pooler."""
    pooler = FramePooler([duration_s], frame_rate, num_layers=1)
    for start, span, frames in pieces:
        windows = pooler.windows([0], [start], [span], torch.device("cpu"))
        pooler.add(0, windows, frames.unsqueeze(0))
    return pooler.result()[0][0]


def test_pool_averages_frames_into_bins():
    # 4 s at 4 native frames/s -> 1 Hz grid: each bin averages 4 frames
    frames = torch.arange(16, dtype=torch.float32).unsqueeze(1)
    out = _pool([(0.0, 4.0, frames)], duration_s=4.0, frame_rate=1.0)
    assert out.squeeze(1).tolist() == [1.5, 5.5, 9.5, 13.5]


def test_pool_averages_overlapping_windows():
    a = torch.zeros(2, 1)  # window 0-2 s
    b = torch.ones(2, 1)  # window 1-3 s (end-aligned overlap)
    out = _pool([(0.0, 2.0, a), (1.0, 2.0, b)], duration_s=3.0, frame_rate=1.0)
    assert out.squeeze(1).tolist() == [0.0, 0.5, 1.0]


def test_empty_bins_take_nearest_filled_bin():
    one = torch.tensor([[7.0]])  # a single embedding for a 3 s clip
    out = _pool([(0.0, 3.0, one)], duration_s=3.0, frame_rate=2.0)
    assert out.shape == (6, 1) and torch.all(out == 7.0)
    two = torch.tensor([[1.0], [5.0]])  # one embedding per 2 s window of a 4 s clip at 2 Hz
    out = _pool([(0.0, 2.0, two[:1]), (2.0, 2.0, two[1:])], duration_s=4.0, frame_rate=2.0)
    # frames land in bins 2 and 6; a tie (bin 4) goes to the earlier filled bin
    assert out.squeeze(1).tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0]


def test_several_frames_coarser_than_the_grid_land_in_their_bins():
    """Two frames per 10 s window (0.2 Hz, like CLAP's coarsest stages against a finer grid)
    at 1 Hz: the frames fall in bins 2 and 7, more than two bins apart."""
    frames = torch.tensor([[1.0], [5.0]])
    out = _pool([(0.0, 10.0, frames)], duration_s=10.0, frame_rate=1.0)
    assert out.squeeze(1).tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0, 5.0]


def test_windows_of_many_clips_pool_in_one_call():
    pooler = FramePooler([2.0, 3.0], frame_rate=1.0, num_layers=1)
    frames = torch.tensor([[[1.0], [3.0]], [[10.0], [20.0]]])  # 2 windows x 2 frames
    pooler.add(0, pooler.windows([0, 1], [0.0, 1.0], [2.0, 2.0], torch.device("cpu")), frames)
    clip0, clip1 = (c[0].squeeze(1).tolist() for c in pooler.result())
    assert clip0 == [1.0, 3.0]
    assert clip1 == [10.0, 10.0, 20.0]  # bin 0 empty -> nearest filled bin


def test_a_nan_clip_does_not_leak_into_the_next_clip_of_its_batch():
    """A window touches a few bins past its clip's end; they must not be the next clip's rows,
    or its 0-weighted NaN frames (0 x NaN = NaN) spoil the neighbour's means."""
    pooler = FramePooler([2.0, 2.0], frame_rate=1.0, num_layers=1)
    frames = torch.tensor([[[float("nan")], [float("nan")]], [[10.0], [20.0]]])
    pooler.add(0, pooler.windows([0, 1], [0.0, 0.0], [2.0, 2.0], torch.device("cpu")), frames)
    clip0, clip1 = (c[0].squeeze(1).tolist() for c in pooler.result())
    assert all(v != v for v in clip0)  # NaN stays with the clip that made it
    assert clip1 == [10.0, 20.0]


def test_the_device_flags_clips_with_a_non_finite_mean_in_any_layer():
    """The cache writer relies on these flags instead of scanning every array on the host: a
    NaN in one layer, and a mean that overflows fp16 (inf after the cast), each mark their own
    clip only."""
    pooler = FramePooler([2.0, 2.0, 2.0], frame_rate=1.0, num_layers=2)
    windows = pooler.windows([0, 1, 2], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0], torch.device("cpu"))
    fine = torch.ones(3, 2, 1)
    layer1 = fine.clone()
    layer1[1, 1, 0] = float("nan")  # clip 1, second frame, second layer
    layer1[2, 0, 0] = 1e6  # clip 2: finite in fp32, inf in the fp16 cache
    pooler.add(0, windows, fine)
    pooler.add(1, windows, layer1)
    pooled = pooler.finish(torch.float16)
    pooled.wait()
    assert pooled.nonfinite_clips() == [1, 2]
    # all finite: answered from one check, no per-clip scan
    clean = FramePooler([2.0], frame_rate=1.0, num_layers=1)
    clean.add(0, clean.windows([0], [0.0], [2.0], torch.device("cpu")), torch.ones(1, 2, 1))
    done = clean.finish(torch.float16)
    assert done.finite.tolist() == [True, True] and done.nonfinite_clips() == []


def test_output_frame_count():
    assert n_output_frames(30.0, 1.0) == 30
    assert n_output_frames(29.99, 1.0) == 30
    assert n_output_frames(0.2, 1.0) == 1


def _pool_many(frames: torch.Tensor) -> list[torch.Tensor]:
    """Two 6 s clips, each two overlapping 4 s windows of 10 frames per s, pooled at 1 Hz."""
    pooler = FramePooler([6.0, 6.0], frame_rate=1.0, num_layers=1)
    windows = pooler.windows([0, 0, 1, 1], [0.0, 2.0, 0.0, 2.0], [4.0] * 4, frames.device)
    pooler.add(0, windows, frames)
    return [clip[0] for clip in pooler.result()]


def test_low_precision_frames_are_summed_in_fp32():
    """bf16 hidden states (an encoder's bf16 forward) pool to the fp32 means of their values,
    not to bf16-rounded sums: 40 frames per window, values that bf16 sums would round."""
    frames = (1000 + torch.randn(4, 40, 8, generator=torch.Generator().manual_seed(0)))
    low = frames.bfloat16()
    pooled, reference = _pool_many(low), _pool_many(low.float())
    assert all(p.dtype == torch.float32 for p in pooled)
    for ours, ref in zip(pooled, reference, strict=True):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)


@pytest.fixture
def cpu_reads_low_precision(monkeypatch):
    """The CPU pooling the way CUDA does (``bmm`` reading bf16, writing fp32): the CPU build
    has no kernel for ``aten::bmm.dtype``, so one is lent for the test."""
    lib = torch.library.Library("aten", "IMPL")
    calls = []

    def bmm_dtype(a, b, out_dtype):
        calls.append((a.dtype, b.dtype, out_dtype))
        return torch.bmm(a.to(out_dtype), b.to(out_dtype))

    lib.impl("bmm.dtype", bmm_dtype, "CPU")
    monkeypatch.setattr(windowing, "FP32_SUMS_FROM_LOW_PRECISION", {"cpu"})
    yield calls
    lib._destroy()


@pytest.mark.skipif("dtype" not in torch.ops.aten.bmm.overloads(),
                    reason="this torch has no bmm with an fp32 output (its pooling copies)")
def test_where_bmm_writes_fp32_the_frames_are_read_as_they_are(cpu_reads_low_precision):
    frames = torch.randn(4, 40, 8, generator=torch.Generator().manual_seed(1)).bfloat16()
    pooled = _pool_many(frames)
    # one bf16 x bf16 -> fp32 product per layer: the assignment is bf16 too, the frames uncopied
    assert cpu_reads_low_precision == [(torch.bfloat16, torch.bfloat16, torch.float32)]
    with torch.no_grad():
        windowing.FP32_SUMS_FROM_LOW_PRECISION.clear()  # the copy-first route
        reference = _pool_many(frames)
    for ours, ref in zip(pooled, reference, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    assert not windowing.reads_low_precision(frames.float())  # fp32 is never re-cast



def test_a_device_without_the_fp32_output_bmm_falls_back_to_the_copy(monkeypatch):
    """Where the low-precision read fails (here: the CPU, which has no such kernel), pooling
    says so once and copies instead; the result is the same and nothing already pooled is
    lost."""
    monkeypatch.setattr(windowing, "FP32_SUMS_FROM_LOW_PRECISION", {"cpu"})
    frames = torch.randn(4, 40, 8, generator=torch.Generator().manual_seed(2)).bfloat16()
    with pytest.warns(UserWarning, match="pooling copies hidden states to fp32"):
        pooled = _pool_many(frames)
    assert not windowing.FP32_SUMS_FROM_LOW_PRECISION
    for ours, ref in zip(pooled, _pool_many(frames.float()), strict=True):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)
