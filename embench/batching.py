"""How many windows go through the encoder per forward pass.

A fixed number, or ``"auto"``: on CUDA as many as fit in the free memory, measured with one small
probe batch and halved on out-of-memory; on the CPU one or two windows. Partial CUDA batches are
padded to a few shapes (see :meth:`BatchSizer.padded`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from embench import precision as precisions
from embench.errors import EmbenchError

AUTO = "auto"
MAX_AUTO_BATCH = 256  # MERT-95M on an H200 gains < 3% beyond 256 five-second windows
CPU_AUTO_SAMPLES = 2**17


class BatchSizer:
    """Windows per forward pass: a fixed number, or (``"auto"``) as many as fit in 70% of the
    GPU memory still free, measured with one small probe batch; halved on out-of-memory.

    On the CPU ``auto`` means at most :data:`CPU_AUTO_SAMPLES` samples per batch (one or two
    windows): larger batches were slower there (melspec on 30 s clips: 7,435 audio-s/s one
    at a time, 2,407 sixteen at a time, 2 cores), as the CPU is memory-bound, not idle.
    """

    def __init__(self, requested: int | str, device: torch.device,
                 log: Callable[[str], None] = print, pad: bool = True,
                 precision: str | None = None):
        if requested != AUTO and (not isinstance(requested, int) or requested < 1):
            raise EmbenchError(f"batch size must be a positive integer or 'auto', "
                               f"got {requested!r}")
        self.size: int | None = None if requested == AUTO else requested
        self.device, self.log, self.pad = device, log, pad
        #: the resolved precision every forward of this extraction runs in
        self.precision = precision or precisions.default_for(device)

    def resolve(self, forward: Callable, window_samples: int) -> int:
        if self.size is None:
            self.size = (self._measure(forward, window_samples) if self.device.type == "cuda"
                         else max(1, CPU_AUTO_SAMPLES // max(1, window_samples)))
        return self.size

    def _measure(self, forward: Callable, window_samples: int) -> int:
        probe = 4
        torch.cuda.synchronize(self.device)
        free, _ = torch.cuda.mem_get_info(self.device)
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        with torch.inference_mode(), precisions.context(self.precision, self.device):
            forward(torch.zeros(probe, window_samples, device=self.device))
        torch.cuda.synchronize(self.device)
        per_window = max(1, torch.cuda.max_memory_allocated(self.device) - base) / probe
        fit = int(0.7 * free / per_window)
        size = max(1, min(MAX_AUTO_BATCH, fit))
        size = size - size % 8 if size >= 8 else size
        self.log(f"batch size auto: {size} windows of {window_samples} samples per forward "
                 f"({per_window / 2**20:.0f} MiB each, {free / 2**30:.1f} GiB free)")
        return size

    def backoff(self) -> bool:
        """Halve the batch after an out-of-memory error; False when already 1."""
        if not self.size or self.size <= 1:
            return False
        self.size //= 2
        self.log(f"out of GPU memory: retrying with batch size {self.size}")
        return True

    def padded(self, n: int) -> int:
        """Rows to run for ``n`` windows: on CUDA, rounded up to a multiple of an eighth of the
        batch size, so partial batches come in at most 8 shapes; otherwise exactly ``n``.

        Every new input shape costs cuDNN plan building (and a compilation with ``--compile``):
        on an H200, a MERT-95M run over 512 files spent 1.2 s more queuing GPU work than a
        third of a 1,536-file run, where the first forwards of new partial-batch sizes land.
        """
        if self.device.type != "cuda" or not self.size or not self.pad:
            return n
        step = max(1, self.size // 8)
        return min(self.size, -(-n // step) * step)
