"""Decoding clips for extraction: a pool of threads that decode, resample and pin, in order.

Threads, not DataLoader processes: soundfile and soxr release the GIL, so threads decode in
parallel, and each decoded clip is pinned by the thread that made it. Worker processes had to
send every clip through shared memory to the main process, which unpickled and pinned them one
by one and capped decoding at about 8,700 audio-s/s on a 16-core H200 host (the threads:
25,000).
"""

from __future__ import annotations

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
