"""Cutting long audio into encoder-sized windows and pooling per-window hidden states back onto
one clip-level time grid of a fixed frame rate.

Why windows end-aligned: group-norm encoders (MERT, wav2vec2) change valid frames when zero
padded, so the last partial window is taken as a full window ending at the clip's end
(overlapping its predecessor) instead of being padded. Clips shorter than one window are passed
whole, at their own length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_windows(
    n_samples: int, sample_rate: int, window_s: float | None, hop_s: float | None
) -> list[Window]:
    """Windows covering ``[0, n_samples)``: regular hops, plus one end-aligned last window when
    the hops leave a tail uncovered."""
    if window_s is None or n_samples <= round(window_s * sample_rate):
        return [Window(0, n_samples)]
    win = int(round(window_s * sample_rate))
    hop = int(round((hop_s or window_s) * sample_rate))
    if hop <= 0:
        raise ValueError("hop must be positive")
    starts = list(range(0, n_samples - win + 1, hop))
    if starts[-1] + win < n_samples:
        starts.append(n_samples - win)
    return [Window(s, s + win) for s in starts]


def n_output_frames(duration_s: float, frame_rate: float) -> int:
    return max(1, math.ceil(duration_s * frame_rate - 1e-9))


def pool_layer(
    pieces: list[tuple[float, float, torch.Tensor]], duration_s: float, frame_rate: float
) -> torch.Tensor:
    """Average native frames into bins of ``1 / frame_rate`` seconds over the whole clip.

    ``pieces`` holds ``(window start s, window duration s, [frames, dim])`` per window. A native
    frame's time is its centre, spreading the window's frames evenly over the window (robust to
    encoders whose frame count is off by one from ``duration * rate``). Overlapping windows are
    averaged. A bin that receives no frame (encoder coarser than the grid) takes the native
    frame nearest to the bin's centre.
    """
    n_out = n_output_frames(duration_s, frame_rate)
    dim = pieces[0][2].shape[-1]
    device = pieces[0][2].device
    times, values = [], []
    for start, span, frames in pieces:
        f = frames.shape[0]
        times.append(start + (torch.arange(f, device=device, dtype=torch.float64) + 0.5) * span / f)
        values.append(frames.float())
    t = torch.cat(times)
    v = torch.cat(values)
    bins = torch.clamp((t * frame_rate).floor().long(), 0, n_out - 1)
    sums = torch.zeros(n_out, dim, device=device, dtype=torch.float32).index_add_(0, bins, v)
    counts = torch.zeros(n_out, device=device, dtype=torch.float32).index_add_(
        0, bins, torch.ones_like(bins, dtype=torch.float32)
    )
    out = sums / counts.clamp(min=1).unsqueeze(1)
    empty = counts == 0
    if empty.any():
        centres = (torch.nonzero(empty).squeeze(1).double() + 0.5) / frame_rate
        nearest = (t.unsqueeze(0) - centres.unsqueeze(1)).abs().argmin(dim=1)
        out[empty] = v[nearest]
    return out
