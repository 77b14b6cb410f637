"""Windows cover long audio without padding; pooling puts frames on one fixed time grid."""

from __future__ import annotations

import torch

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


def test_windows_of_many_clips_pool_in_one_call():
    pooler = FramePooler([2.0, 3.0], frame_rate=1.0, num_layers=1)
    frames = torch.tensor([[[1.0], [3.0]], [[10.0], [20.0]]])  # 2 windows x 2 frames
    pooler.add(0, pooler.windows([0, 1], [0.0, 1.0], [2.0, 2.0], torch.device("cpu")), frames)
    clip0, clip1 = (c[0].squeeze(1).tolist() for c in pooler.result())
    assert clip0 == [1.0, 3.0]
    assert clip1 == [10.0, 10.0, 20.0]  # bin 0 empty -> nearest filled bin


def test_output_frame_count():
    assert n_output_frames(30.0, 1.0) == 30
    assert n_output_frames(29.99, 1.0) == 30
    assert n_output_frames(0.2, 1.0) == 1
