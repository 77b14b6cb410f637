"""Cutting long audio into encoder-sized windows and pooling per-window hidden states back onto
one clip-level time grid of a fixed frame rate.

Why windows end-aligned: group-norm encoders (MERT, wav2vec2) change valid frames when zero
padded, so the last partial window is taken as a full window ending at the clip's end
(overlapping its predecessor) instead of being padded. Clips shorter than one window are passed
whole, at their own length.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

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


#: Device types whose batched matmul reads bf16/fp16 operands and writes fp32 sums
#: (``torch.bmm(..., out_dtype=torch.float32)``; CUDA, per torch's documentation). There the
#: pooler reads each layer's hidden states in the model's dtype, instead of first copying them
#: to fp32 (a read, a write twice as wide, and a second read: about 7% of MERT-95M's bytes).
#: Older torch releases (before ``aten::bmm.dtype``) always take the copy.
FP32_SUMS_FROM_LOW_PRECISION = {"cuda"} if "dtype" in torch.ops.aten.bmm.overloads() else set()
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def reads_low_precision(frames: torch.Tensor) -> bool:
    """Whether :func:`frame_sums` multiplies ``frames`` as they are (no fp32 copy first)."""
    return (frames.dtype in _LOW_PRECISION
            and frames.device.type in FP32_SUMS_FROM_LOW_PRECISION)


def frame_sums(assign: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """``[W, bins, F]`` 0/1 assignment @ ``[W, F, D]`` frames -> ``[W, bins, D]`` fp32 sums.

    A 0/1 matrix is exact in bf16 and fp16, so on devices that accumulate low-precision products
    in fp32 and write fp32 the result is the fp32 sum of the frames as the model produced them,
    the same as multiplying their fp32 copies, up to summation order. Elsewhere (the CPU) the
    frames are converted first. Autocast is off either way: sums never round to bf16."""
    with torch.autocast(frames.device.type, enabled=False):
        if reads_low_precision(frames):
            try:
                return torch.bmm(assign.to(frames.dtype), frames, out_dtype=torch.float32)
            except torch.cuda.OutOfMemoryError:
                raise
            except RuntimeError as exc:  # a build or library without it: copy, as before
                FP32_SUMS_FROM_LOW_PRECISION.discard(frames.device.type)
                warnings.warn(f"bmm with an fp32 output failed on {frames.device.type} "
                              f"({type(exc).__name__}: {str(exc)[:200]}); pooling copies "
                              f"hidden states to fp32 first from now on", stacklevel=2)
        return torch.bmm(assign.float(), frames.float())


class _Plan(NamedTuple):
    assign: torch.Tensor  # [windows, bins in a window, frames] of 0/1, in the frames' dtype
    counts: torch.Tensor  # [windows * bins in a window]: frames per bin
    rows: torch.Tensor  # [windows * bins in a window]: the bin's row in the group's sums


class WindowBatch(NamedTuple):
    """One forward batch of windows: ``meta`` rows are ``[start s, span s, last bin, offset]``
    on the device; ``max_bins`` bounds the bins any one window touches (host-side); ``plans``
    holds the frame-to-bin assignment per frame count, built by the first layer that needs it
    and reused by the others (MERT-95M: 13 layers, one assignment): keyed by frame count and
    the dtype the sums read."""

    meta: torch.Tensor
    max_bins: int
    plans: dict[tuple[int, torch.dtype], _Plan]


class FramePooler:
    """Pools every layer of a group of clips onto one time grid of ``frame_rate`` bins per second.

    Native frames of a window are spread evenly over the window (a frame's time is its centre),
    so encoders whose frame count is off by one from ``duration * rate`` need no special case.
    All windows of one forward batch are added with one ``index_add_`` per layer, whatever clips
    they come from; overlapping windows average. A bin that receives no frame (an encoder coarser
    than the grid, e.g. one embedding per window) takes the value of the nearest filled bin.
    """

    def __init__(self, durations_s: list[float], frame_rate: float, num_layers: int):
        self.frame_rate = frame_rate
        self.n_out = [n_output_frames(d, frame_rate) for d in durations_s]
        self.offsets = [0]
        for n in self.n_out:
            self.offsets.append(self.offsets[-1] + n)
        self.sums: list[torch.Tensor | None] = [None] * num_layers
        self.counts: list[torch.Tensor | None] = [None] * num_layers

    def windows(self, clips: list[int], starts_s: list[float], spans_s: list[float],
                device: torch.device) -> WindowBatch:
        """Describe one forward batch of windows (window ``i`` of clip ``clips[i]`` covers
        ``[starts_s[i], starts_s[i] + spans_s[i])``) as one small device tensor, copied
        asynchronously so the GPU queue is never drained for bookkeeping."""
        meta = torch.tensor(
            [[start, span, self.n_out[c] - 1, self.offsets[c]]
             for c, start, span in zip(clips, starts_s, spans_s, strict=True)],
            dtype=torch.float64,
        )
        if device.type == "cuda":
            meta = meta.pin_memory()
        # a window of span s touches at most ceil(s * rate) + 1 bins
        max_bins = max(math.ceil(span * self.frame_rate - 1e-9) + 1 for span in spans_s)
        return WindowBatch(meta.to(device, non_blocking=True), max_bins, {})

    def _plan(self, windows: WindowBatch, frames: torch.Tensor) -> _Plan:
        """Which bin each of a window's frames falls in, as a 0/1 matrix over the few
        consecutive bins a window touches (in the dtype :func:`frame_sums` multiplies it in),
        with the bins' rows in the group's sums."""
        n_frames, device = frames.shape[1], frames.device
        dtype = frames.dtype if reads_low_precision(frames) else torch.float32
        plan = windows.plans.get((n_frames, dtype))
        if plan is not None:
            return plan
        start, span, last, offset = (col.unsqueeze(1) for col in windows.meta.unbind(1))
        centres = (torch.arange(n_frames, dtype=torch.float64, device=device) + 0.5)
        times = start + centres.unsqueeze(0) * span / n_frames
        bins = torch.minimum((times * self.frame_rate).floor().clamp(min=0), last).long()
        first = bins[:, :1]
        local = bins - first  # [W, F], non-decreasing from 0 along F
        # every bin a window touches, known on the host (no device sync); frames coarser than
        # the grid skip bins, so their count is no bound
        n_local = windows.max_bins
        assign = torch.zeros(len(windows.meta), n_local, n_frames, device=device)
        assign.scatter_(1, local.unsqueeze(1), 1.0)
        # a window's bins past its clip's end go to a spare last row, never to the next clip's
        # bins: they add 0-weighted frames, and 0 x NaN would spoil the neighbour's means
        clip_bins = first + torch.arange(n_local, device=device).unsqueeze(0)  # [W, n_local]
        rows = torch.where(clip_bins <= last.long(), clip_bins + offset.long(),
                           self.offsets[-1]).reshape(-1)
        plan = _Plan(assign.to(dtype), assign.sum(dim=2).reshape(-1), rows)
        windows.plans[(n_frames, dtype)] = plan
        return plan

    def add(self, layer: int, windows: WindowBatch, frames: torch.Tensor) -> None:
        """Add one layer's ``frames`` ``[windows, F, D]`` of the batch ``windows`` describes.

        Each window's frames fall into a few consecutive bins, so the sums are one batched
        matmul with a 0/1 assignment matrix ``[windows, bins in a window, F]`` followed by an
        ``index_add_`` of only ``windows x bins`` rows: far fewer colliding atomic adds than
        adding every frame to its bin (75 frames per 1 Hz bin for MERT). ``frames`` may be in
        any float dtype; the sums are fp32 (:func:`frame_sums`).
        """
        dim = frames.shape[2]
        plan = self._plan(windows, frames)
        sums = frame_sums(plan.assign, frames)  # [W, n_local, D] fp32
        if self.sums[layer] is None:  # one row per bin of every clip, and the spare row
            self.sums[layer] = torch.zeros(self.offsets[-1] + 1, dim, device=frames.device)
            self.counts[layer] = torch.zeros(self.offsets[-1] + 1, device=frames.device)
        self.sums[layer].index_add_(0, plan.rows, sums.reshape(-1, dim))
        self.counts[layer].index_add_(0, plan.rows, plan.counts)

    def result(self) -> list[list[torch.Tensor]]:
        """Per clip, per layer: ``[bins, dim]`` float32 on the CPU (waits for the device)."""
        return self.finish(torch.float32).wait()

    def finish(self, dtype: torch.dtype = torch.float16) -> PooledBatch:
        """Start turning sums into means and copying them to the host, without waiting: on CUDA
        the copies go to pinned memory behind an event, so the caller can queue the next batch's
        work before it collects this one (:meth:`PooledBatch.wait`)."""
        if any(sums is None for sums in self.sums):
            raise ValueError("a layer received no frames")
        on_cuda = self.sums[0].device.type == "cuda"

        def to_host(t: torch.Tensor) -> torch.Tensor:
            if not on_cuda:
                return t
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            return host.copy_(t, non_blocking=True)

        layers = []
        finite: torch.Tensor | None = None  # per bin, over every layer, after the cast
        for sums, counts in zip(self.sums, self.counts, strict=True):
            sums, counts = sums[:-1], counts[:-1]  # without the spare row
            means = (sums / counts.clamp(min=1).unsqueeze(1)).to(dtype)
            rows = torch.isfinite(means).all(dim=1)
            finite = rows if finite is None else finite & rows
            layers.append((to_host(means), to_host(counts > 0)))
        event = torch.cuda.Event() if on_cuda else None
        host_finite = to_host(finite)
        if event is not None:
            event.record()
        return PooledBatch(layers, event, list(self.n_out), list(self.offsets), host_finite)


@dataclass
class PooledBatch:
    """Pooled means of a group of clips on their way to the host (:meth:`FramePooler.finish`)."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    event: torch.cuda.Event | None
    n_out: list[int]
    offsets: list[int]
    #: per bin of the group: every layer's mean is finite there (an empty bin's is 0), found on
    #: the device, so the cache writer need not scan each clip's arrays on the host
    finite: torch.Tensor

    def nonfinite_clips(self) -> list[int]:
        """Indices of the clips with a NaN or inf in some layer (call after :meth:`wait`)."""
        if bool(self.finite.all()):
            return []
        return [c for c, n in enumerate(self.n_out)
                if not bool(self.finite[self.offsets[c]:self.offsets[c] + n].all())]

    def wait(self) -> list[list[torch.Tensor]]:
        """Per clip, per layer: ``[bins, dim]`` on the CPU, empty bins filled from the nearest."""
        if self.event is not None:
            self.event.synchronize()
        # Usually every bin is filled: one check per layer, not one per clip and layer (the
        # host's share of a 30 s clip at 15,000 audio-s/s is 2 ms).
        whole = [bool(f.all()) for _, f in self.layers]
        out = []
        for c, n in enumerate(self.n_out):
            lo = self.offsets[c]
            out.append([m[lo:lo + n] if full else _fill_empty(m[lo:lo + n], f[lo:lo + n])
                        for (m, f), full in zip(self.layers, whole, strict=True)])
        return out


def _fill_empty(values: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    if bool(filled.all()):
        return values
    have = torch.nonzero(filled).squeeze(1)
    if have.numel() == 0:
        raise ValueError("no frame landed in any bin of a clip")
    bins = torch.arange(len(values))
    nearest = have[(bins.unsqueeze(1) - have.unsqueeze(0)).abs().argmin(dim=1)]
    return values[nearest]
