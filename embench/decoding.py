"""Decoding clips for extraction: a pool of threads that decode, resample and pin, in order.

Threads, not DataLoader processes: soundfile and soxr release the GIL, so threads decode in
parallel, and each decoded clip is pinned by the thread that made it. Worker processes had to
send every clip through shared memory to the main process, which unpickled and pinned them one
by one and capped decoding at about 8,700 audio-s/s on a 16-core H200 host (the threads:
25,000).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from embench.audio import load_audio
from embench.errors import AudioDecodeError
from embench.task import Clip

#: Decode threads pin the clips they decode (CUDA only), so host-to-device copies are async.
PIN_IN_THREADS = True

Decoded = tuple[str, torch.Tensor | None, str | None]

#: Decoded audio the threads may hold ahead of the encoder, in bytes. On CUDA every such clip is
#: pinned (page-locked) host memory, which the CUDA host allocator grows block by block and never
#: returns: two extraction groups of 30 s clips at CLAP's 48 kHz would be about 4 GiB ahead,
#: 5.5 GiB pinned after its power-of-two rounding. One group always fits, whatever this says.
READ_AHEAD_BYTES = 2 * 2**30


def read_ahead_clips(group_clips: int, clip_bytes: int, threads: int,
                     budget: int | None = None) -> int:
    """Clips to keep decoded (or decoding) ahead of the main thread: two groups of
    ``group_clips``, fewer where those would hold more than ``budget`` bytes of audio (default
    :data:`READ_AHEAD_BYTES`), but never fewer than one group, since the GPU would then wait for
    every group to decode, nor than two per thread, so no thread waits for work."""
    by_budget = (READ_AHEAD_BYTES if budget is None else budget) // max(1, clip_bytes)
    return max(2 * threads, group_clips, min(2 * group_clips, by_budget))


#: torch's pinned pool grows by ``cudaHostAlloc`` unless told otherwise, which page-locks slowly
#: and behind one lock (pytorch#108488); ``malloc`` + ``cudaHostRegister``, with 8 threads
#: touching the pages first, is torch's alternative. On an H200 VM (2026-11-28), the first
#: MERT-95M run of a process grew the pool by 576 blocks (2.1 GiB) in 4.9 s of the decode
#: threads' time by ``cudaHostAlloc`` and in 1.0-1.2 s by ``cudaHostRegister`` (one machine);
#: CLAP's 3.5 GiB, 10.2 s against 2.0 s (two machines). ``benchmarks/gpu.py`` end to end,
#: all four encoders in one process, with the cache-write changes of the same day: MERT-95M
#: 2,707 -> 9,768 audio-s/s, CLAP 3,036 -> 9,454, the pool's growth 45.6 -> 3.2 s in all.
HOST_REGISTER_SETTINGS = "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"
_ALLOC_CONF_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
_host_register_set = False  # this process switched it on


def use_host_register() -> bool:
    """Make torch's pinned pool grow with ``cudaHostRegister`` (:data:`HOST_REGISTER_SETTINGS`)
    and return whether it now does. Left alone where the user's ``PYTORCH_CUDA_ALLOC_CONF`` (or
    ``PYTORCH_ALLOC_CONF``) names a ``pinned_`` option, and once any pinned block exists: torch
    frees each block the way the setting says at free time, so a block made by
    ``cudaHostAlloc`` must not outlive a switch. The user's other options are kept (torch
    re-parses the whole string)."""
    global _host_register_set
    if _host_register_set:
        return True
    confs = [os.environ.get(v, "") for v in _ALLOC_CONF_VARS]
    if any("pinned_use_cuda_host_register:true" in c.replace(" ", "").lower() for c in confs):
        return True
    if any("pinned_" in c for c in confs) or not torch.cuda.is_available():
        return False
    setter = (getattr(torch._C, "_accelerator_setAllocatorSettings", None)  # torch >= 2.9
              or getattr(torch.cuda.memory, "_set_allocator_settings", None))
    if setter is None or pinned_stats().get("num_host_alloc", 0.0) > 0:
        return False
    user = next((c for c in confs if c), "")
    try:
        setter(f"{user},{HOST_REGISTER_SETTINGS}" if user else HOST_REGISTER_SETTINGS)
    except (RuntimeError, ValueError):  # a torch that does not know the options
        return False
    _host_register_set = True
    return True


def pinned_stats() -> dict[str, float]:
    """Counters of the CUDA pinned host allocator that :func:`pinned_growth` reads; empty
    without CUDA, or with a torch that does not count (``host_memory_stats`` is recent)."""
    stats = getattr(torch.cuda.memory, "host_memory_stats", None)
    if stats is None or not torch.cuda.is_available():
        return {}
    try:
        counters = stats()
    except RuntimeError:
        return {}
    keys = ("num_host_alloc", "allocated_bytes.current", "host_alloc_time.total")
    return {k: float(counters[k]) for k in keys if k in counters}


def pinned_growth(before: dict[str, float], after: dict[str, float],
                  registered: bool = False) -> str | None:
    """What growing the pinned pool cost between two :func:`pinned_stats`, for the extraction's
    timing line; None when no block was added. The decode threads add the blocks (with
    ``cudaHostRegister`` when ``registered``, see :func:`use_host_register`): a run that grows
    the pool by gigabytes may show it in any of the main thread's waits, so the line says how
    much it grew and how long the threads spent on it."""
    def grew(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    blocks = int(grew("num_host_alloc"))
    if blocks <= 0:
        return None
    how = "cudaHostRegister" if registered else "cudaHostAlloc"
    return (f"pinned memory grew by {blocks} blocks ({grew('allocated_bytes.current') / 2**30:.1f}"
            f" GiB, {grew('host_alloc_time.total') / 1e6:.1f} s in {how})")


def decode_clip(clip: Clip, sample_rate: int, pin: bool) -> Decoded:
    """One clip as ``(clip_id, audio or None, error or None)``: errors travel back as data."""
    try:
        audio = torch.from_numpy(load_audio(clip.source, sample_rate, clip.start_s, clip.end_s,
                                            name=clip.describe_source()))
    except AudioDecodeError as exc:
        return clip.id, None, exc.reason
    return clip.id, (audio.pin_memory() if pin else audio), None


def decoded_clips(clips: Sequence[Clip], sample_rate: int, threads: int, cuda: bool,
                  ahead: Callable[[], int] = lambda: 0) -> Iterator[Decoded]:
    """``clips`` decoded in order by ``threads`` threads (0: in this thread), keeping
    ``max(2 x threads, ahead())`` clips decoded or decoding ahead of the consumer; pinned when
    ``cuda`` (and :data:`PIN_IN_THREADS`).

    The read-ahead must cover a whole group of the extraction loop: while the GPU works
    through one group, the main thread is blocked launching its kernels, and the next group
    has to be decoded by then.
    """
    pin = cuda and PIN_IN_THREADS
    if not threads:
        for clip in clips:
            yield decode_clip(clip, sample_rate, pin)
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="embench-decode")
    try:
        pending: deque[Future] = deque()
        rest = iter(clips)
        exhausted = False
        while True:
            while not exhausted and len(pending) < max(2 * threads, ahead()):
                clip = next(rest, None)
                if clip is None:
                    exhausted = True
                else:
                    pending.append(pool.submit(decode_clip, clip, sample_rate, pin))
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
