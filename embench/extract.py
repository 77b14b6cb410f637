"""Batched embedding extraction into the cache.

Files are decoded, resampled and pinned by a pool of threads (:mod:`embench.decoding`). The
main thread cuts windows, batches windows of equal length (audio is never padded), runs the
encoder under ``inference_mode`` in the run's precision (:mod:`embench.precision`; on CUDA
bf16 weights, or bf16 autocast for encoders that need fp32 parts), pools every layer onto the
cache's fixed frame rate and hands finished clips to background writers that store them as
fp16 shards (clips the device found non-finite are left out and reported). Clips already in
the cache are not decoded again, and the encoder's weights are loaded only if some clip needs
them.

On CUDA the device never waits for the host: a group's pooled results come back through pinned
memory behind an event while the next group is already queued; the batch size is chosen from
free memory (``batch_size="auto"``) and halved on out-of-memory; partial batches are filled up
with copies of real windows (outputs dropped) so only a handful of shapes ever reach cuDNN and
``torch.compile``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embench import precision as precisions
from embench.batching import AUTO, BatchSizer
from embench.cache import CacheKey, EmbeddingCache, source_fingerprint, weights_fingerprint
from embench.decoding import (
    decoded_clips,
    pinned_growth,
    pinned_stats,
    read_ahead_clips,
    use_host_register,
)
from embench.devices import default_num_workers
from embench.encoder import Encoder, Weights
from embench.errors import EmbenchError
from embench.features import Features
from embench.progress import ExtractionProgress
from embench.task import Clip, ClipSet
from embench.windowing import FramePooler, PooledBatch, Window, plan_windows


def weights_revision(encoder: Encoder, weights: str, weights_path: str | None) -> str | None:
    """The revision the cache key and the result record: for pretrained weights the encoder's
    own :meth:`~embench.encoder.Encoder.weights_revision` (e.g. the hub commit its cached
    snapshot resolves to), else ``info.revision``."""
    if weights == "pretrained":
        found = encoder.weights_revision(weights, weights_path)
        if found:
            return found
    return encoder.info.revision


def cache_key(encoder: Encoder, clips: ClipSet, weights: str, frame_rate: float,
              device: torch.device, weights_path: str | None = None,
              precision: str | None = None) -> CacheKey:
    """``precision``: the resolved one (default: :func:`embench.precision.default_for`)."""
    info = encoder.info
    return CacheKey(
        encoder=info.name, encoder_version=info.version, weights=weights,
        revision=weights_revision(encoder, weights, weights_path),
        weights_source=weights_fingerprint(weights_path) if weights == "pretrained" else None,
        sample_rate=info.sample_rate, window_s=info.window_s, hop_s=info.hop_s,
        frame_rate=frame_rate, compute_dtype=precision or precisions.default_for(device),
        dataset_id=clips.dataset_id, dataset_revision=clips.dataset_revision,
    )


def _as_layers(out: torch.Tensor | Sequence[torch.Tensor], encoder: Encoder,
               batch: int | None = None) -> list[torch.Tensor]:
    """Normalise an encoder's output to one ``[batch, frames, dim]`` tensor per layer and check
    it against the encoder's own metadata and the ``batch`` rows it was given (a mismatch is a
    plugin bug worth a clear message, not an error deep inside pooling)."""
    info = encoder.info
    if isinstance(out, torch.Tensor) and out.ndim != 4:
        raise EmbenchError(
            f"encoder {info.name!r} returned one {out.ndim}-D tensor of shape "
            f"{tuple(out.shape)}; forward must return [batch, layers, frames, dim], or a list "
            f"with one [batch, frames, dim] tensor per layer")
    layers = list(out.unbind(1)) if isinstance(out, torch.Tensor) else list(out)
    if len(layers) != info.num_layers:
        raise EmbenchError(f"encoder {info.name!r} returned {len(layers)} layers but its info "
                           f"declares num_layers={info.num_layers}")
    for i, layer in enumerate(layers):
        if layer.ndim != 3 or layer.shape[-1] != info.layer_dim(i):
            raise EmbenchError(f"encoder {info.name!r} layer {i} has shape {tuple(layer.shape)}; "
                               f"expected [batch, frames, {info.layer_dim(i)}]")
        if batch is not None and layer.shape[0] != batch:
            raise EmbenchError(
                f"encoder {info.name!r} returned {layer.shape[0]} row(s) in layer {i} for a "
                f"batch of {batch} windows; forward must return one row per input row, in order")
    return layers


def embed_group(encoder: Encoder, waves: list[torch.Tensor], frame_rate: float,
                sizer: BatchSizer, forward: Callable | None = None) -> PooledBatch:
    """Queue every window of ``waves`` through the encoder and pool it; returns without
    waiting for the device (call ``.wait()`` on the result for per-clip, per-layer arrays)."""
    info, device = encoder.info, encoder.device
    forward = forward or encoder.forward
    sr = info.sample_rate
    buckets: dict[int, list[tuple[int, Window]]] = defaultdict(list)
    for ci, wave in enumerate(waves):
        for w in plan_windows(len(wave), sr, info.window_s, info.hop_s):
            buckets[w.length].append((ci, w))
    pooler = FramePooler([len(w) / sr for w in waves], frame_rate, info.num_layers)
    # Whole clips go to the device once (pinned by the decode threads: asynchronous); windows are
    # sliced and stacked there, so nothing in the loop waits for the GPU.
    on_device = [w.to(device, non_blocking=True) for w in waves]
    with torch.inference_mode(), precisions.context(sizer.precision, device):
        for length in sorted(buckets):
            items = buckets[length]
            b0 = 0
            while b0 < len(items):
                chunk = items[b0:b0 + sizer.resolve(forward, length)]
                rows = [on_device[ci][w.start:w.end] for ci, w in chunk]
                rows += rows[:1] * (sizer.padded(len(rows)) - len(rows))
                try:
                    out = forward(torch.stack(rows))
                except torch.cuda.OutOfMemoryError:
                    del rows
                    torch.cuda.empty_cache()
                    if not sizer.backoff():
                        raise
                    continue
                windows = pooler.windows([ci for ci, _ in chunk],
                                         [w.start / sr for _, w in chunk],
                                         [w.length / sr for _, w in chunk], device)
                for li, layer in enumerate(_as_layers(out, encoder, len(rows))):
                    pooler.add(li, windows, layer[:len(chunk)])
                b0 += len(chunk)
    return pooler.finish(torch.float16)


def embed_waveforms(encoder: Encoder, waves: list[torch.Tensor], frame_rate: float,
                    batch_size: int | str = AUTO,
                    precision: str | None = None) -> list[list[np.ndarray]]:
    """Per clip, per layer: ``[frames at frame_rate, dim]`` fp16 arrays. ``precision``: a
    resolved one the encoder is prepared for (:func:`embench.precision.prepare`)."""
    sizer = BatchSizer(batch_size, encoder.device, log=lambda m: None, precision=precision)
    pooled = embed_group(encoder, waves, frame_rate, sizer).wait()
    return [[layer.numpy() for layer in clip] for clip in pooled]


@dataclass
class _Settings:
    device: torch.device
    frame_rate: float
    batch_size: int | str
    num_workers: int
    weights: Weights
    weights_path: str | None
    show_progress: bool
    compile: bool = False
    log: Callable[[str], None] = print
    precision: str = "fp32"


def extract(
    encoder: Encoder,
    clips: ClipSet,
    cache_root: Path,
    *,
    device: torch.device,
    frame_rate: float = 1.0,
    batch_size: int | str = AUTO,
    num_workers: int | None = None,
    weights: Weights = "pretrained",
    weights_path: str | None = None,
    show_progress: bool = True,
    compile: bool = False,
    log: Callable[[str], None] = print,
    shard: tuple[int, int] | None = None,
    precision: str = "auto",
) -> Features:
    """Make sure every decodable clip of ``clips`` is in the cache; return the cached features.

    ``batch_size``: windows per forward pass, or ``"auto"`` (see :class:`BatchSizer`).
    ``compile``: run the encoder's forward through ``torch.compile`` (worth it for long runs;
    the first batches of each shape pay the compilation).
    ``shard=(rank, world_size)``: extract only every ``world_size``-th missing clip, starting
    at ``rank`` (:mod:`embench.distributed`); the returned features cover what is cached.
    ``precision``: ``auto``, ``fp32``, ``bf16-autocast`` or ``bf16`` (:mod:`embench.precision`);
    the resolved one is in the cache key.
    """
    info = encoder.info
    if frame_rate > max(info.frame_rate, 1.0) * (1 + 1e-9):  # 1 Hz, the default, always works
        raise EmbenchError(
            f"--frame-rate {frame_rate:g} is finer than {info.name}'s own {info.frame_rate:g} "
            f"frames per second: the extra bins would only repeat its frames. Use "
            f"--frame-rate {info.frame_rate:g} or less.")
    resolved = precisions.resolve(precision, encoder, device)
    settings = _Settings(device, frame_rate, batch_size,
                         default_num_workers(device) if num_workers is None else num_workers,
                         weights, weights_path, show_progress, compile, log, resolved)
    fingerprints = {c.id: source_fingerprint(c.source, c.start_s, c.end_s) for c in clips}
    cache = EmbeddingCache(cache_root, cache_key(encoder, clips, weights, frame_rate, device,
                                                     weights_path, resolved), fingerprints)
    cache.prepare()
    done = cache.done_ids()
    todo = [c for c in clips if c.id not in done]
    cached = len(clips) - len(todo)
    part = ""
    if shard is not None:
        rank, world = shard
        todo = todo[rank::world]
        part = f" (shard {rank} of {world})"
    skipped: dict[str, str] = {}
    if todo:
        log(f"{info.name}: {cached} of {len(clips)} clips cached, extracting {len(todo)}{part} "
            f"into {cache.dir}")
        tip = precisions.cpu_hint(precision, encoder, device)
        if tip:
            log(tip)
        if precision not in ("auto", resolved):
            log(f"{info.name}: its weights stay fp32 (it does not declare bf16 support), so it "
                f"runs {resolved} instead of {precision}")
        skipped = _run_loader(encoder, todo, cache, settings)
    else:
        log(f"{info.name}: all {len(clips)} clips cached in {cache.dir}")
    index = cache.index()
    dims = info.dims if len(info.dims) == info.num_layers else info.dims * info.num_layers
    return Features(cache=cache, clip_ids=[c.id for c in clips if c.id in index],
                    num_layers=info.num_layers, dims=tuple(dims), skipped=skipped)


#: A group (one cache shard) holds at least this many forward batches of windows on CUDA, so a
#: padded last batch wastes little; on the CPU one batch is enough. The first group holds one
#: batch, so the GPU starts after a quarter of the decoding it would otherwise wait for.
BATCHES_PER_GROUP_CUDA = 4
#: ...and at least this many windows, so shards do not shrink to a clip each at batch size 1.
MIN_GROUP_WINDOWS = 16


def group_windows_target(batch_size: int, cuda: bool, first: bool) -> int:
    """Windows to gather before a group goes to the encoder (see the constants above)."""
    batches = BATCHES_PER_GROUP_CUDA if cuda and not first else 1
    return max(MIN_GROUP_WINDOWS, batch_size * batches)


NON_FINITE = ("the encoder returned non-finite values (NaN or inf; the fp16 cache also "
              "overflows above 65504); not cached")


#: Threads writing cache shards (each a save and an fsync of about 100 MB for a group of
#: MERT-95M clips); as many shards, plus one, may wait unwritten. With one writer that also
#: scanned every clip's arrays for NaN/inf (two GIL hand-offs per array, each a wait behind the
#: thread launching kernels), a 1,536-file MERT-95M run on an H200 waited 0.7 s for cache
#: writes (11,578 audio-s/s); with the device flagging non-finite clips, or two writers, 0.2 s
#: (12,064 and 12,721); both, the default: 0.2 s, 12,649 (``benchmarks/gpu_e2e.py``, one
#: process). An earlier session's machine waited 1.2 s of 4.7 s the former way.
CACHE_WRITERS = 2


def _write_shard(cache: EmbeddingCache, shard: dict[str, tuple[float, list[np.ndarray]]]
                 ) -> None:
    """Runs in a writer thread; ``shard`` holds only finite clips (the device found the others:
    :meth:`~embench.windowing.PooledBatch.nonfinite_clips`), since a NaN would otherwise be
    cached and reach the probes as an unexplained chance-level score."""
    if shard:
        cache.write_shard(shard)


class _Stopwatch:
    """Where the main thread's time goes during extraction, reported in one log line: a slow
    run then says whether decoding, the GPU or the cache writes held it up."""

    def __init__(self, gpu: bool = False, registered: bool = False) -> None:
        self.start = time.perf_counter()
        self.waits: dict[str, float] = defaultdict(float)
        self.gpu = gpu
        self.registered = registered
        self.pinned = pinned_stats() if gpu else {}

    def timed(self, stage: str, fn: Callable, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.waits[stage] += time.perf_counter() - t0

    def summary(self, name: str, clips: int, audio_s: float, non_finite: int = 0) -> str:
        """``clips`` went through the encoder, ``non_finite`` of them were not cached."""
        total = time.perf_counter() - self.start
        parts = ", ".join(f"{v:.1f} s {k}" for k, v in self.waits.items())
        pinned = (pinned_growth(self.pinned, pinned_stats(), self.registered) if self.gpu
                  else None)
        dropped = f", {non_finite} of them non-finite and not cached" if non_finite else ""
        return (f"{name}: embedded {clips} clips ({audio_s:,.0f} audio-s{dropped}) in "
                f"{total:.1f} s, "
                f"{audio_s / max(total, 1e-9):,.0f} audio-s/s; main thread: {parts}"
                + (f"; {pinned}" if pinned else ""))


def _run_loader(encoder: Encoder, todo: list[Clip], cache: EmbeddingCache,
                s: _Settings) -> dict[str, str]:
    """Decode, embed and cache ``todo``; returns the skipped clips with their reasons.

    The encoder keeps every torch thread on the CPU too: decode threads are busy only briefly
    per clip, and taking a core from the model halved MERT-95M's end-to-end rate on 2 cores
    (3.2 vs 5.7 audio-s/s). ``cudnn.benchmark`` stays as the user set it: on an H200 it found
    nothing faster for MERT's convolutions and cost seconds of autotuning per batch shape.
    """
    info = encoder.info
    sizer = BatchSizer(s.batch_size, s.device, s.log, precision=s.precision)
    forward: Callable | None = None
    skipped: dict[str, str] = {}
    writes: list[Future] = []
    # A queued group keeps only its clips' ids and lengths: the decoded audio (pinned on CUDA)
    # goes back to the allocator as soon as its copy to the device is queued, not a group later.
    in_flight: tuple[list[tuple[str, int]], PooledBatch] | None = None

    gpu = s.device.type == "cuda"
    # before the decode threads pin their first clip: torch frees a block the way it was made
    watch = _Stopwatch(gpu, registered=gpu and use_host_register())
    queue_label = "queuing GPU work" if gpu else "running the encoder"
    wait_label = "waiting for the GPU" if gpu else "collecting results"

    def finish_write(write: Future) -> None:
        watch.timed("waiting for cache writes", write.result)

    def store(group, pooled: PooledBatch) -> None:
        results = watch.timed(wait_label, pooled.wait)
        bad = {group[c][0] for c in pooled.nonfinite_clips()}
        skipped.update(dict.fromkeys(bad, NON_FINITE))
        shard = {cid: (samples / info.sample_rate, [a.numpy() for a in layers])
                 for (cid, samples), layers in zip(group, results, strict=True)
                 if cid not in bad}
        while len(writes) > CACHE_WRITERS:  # bound the memory held by unwritten shards
            finish_write(writes.pop(0))
        writes.append(writer.submit(_write_shard, cache, shard))
        bar.advance(len(group), sum(samples for _, samples in group) / info.sample_rate)

    with ThreadPoolExecutor(max_workers=CACHE_WRITERS) as writer, \
            ExtractionProgress(f"extract {info.name}", len(todo), s.show_progress) as bar:
        group: list[tuple[str, torch.Tensor]] = []
        group_windows = 0
        first_clip = [1, 0]  # windows and bytes of the first usable clip: size the read-ahead
        any_queued = False  # the first group is one batch: the GPU starts sooner

        def group_target(first: bool = False) -> int:
            return group_windows_target(sizer.size or 1, gpu, first)

        def read_ahead() -> int:  # two full groups from the start, within READ_AHEAD_BYTES
            windows, nbytes = first_clip
            return read_ahead_clips(-(-group_target() // windows), nbytes, s.num_workers)

        clips = decoded_clips(todo, info.sample_rate, s.num_workers, gpu, read_ahead)
        while True:
            item = watch.timed("waiting for decoding", next, clips, None)
            if item is not None:
                clip_id, audio, error = item
                if error is None and len(audio) < info.min_samples:
                    error = (f"too short for {info.name}: {len(audio)} samples < "
                             f"{info.min_samples}")
                if error is not None:
                    skipped[clip_id] = error
                    bar.advance(1, 0.0)
                    continue
                windows = plan_windows(len(audio), info.sample_rate, info.window_s, info.hop_s)
                if forward is None:
                    precisions.prepare(encoder, s.precision, s.device, s.weights,
                                       s.weights_path)
                    forward = (torch.compile(encoder.forward, dynamic=False) if s.compile
                               else encoder.forward)
                    sizer.resolve(forward, round(info.window_s * info.sample_rate)
                                  if info.window_s else windows[0].length)
                    first_clip[:] = [len(windows), audio.numel() * audio.element_size()]
                group.append((clip_id, audio))
                group_windows += len(windows)
                if group_windows < group_target(first=not any_queued):
                    continue
            if group:
                pooled = watch.timed(queue_label, embed_group, encoder,
                                     [a for _, a in group], s.frame_rate, sizer, forward)
                any_queued = True
                if in_flight is not None:  # collect the previous group while this one runs
                    store(*in_flight)
                in_flight = ([(cid, len(audio)) for cid, audio in group], pooled)
                if not gpu:  # the CPU computed it already: store it now, nothing to overlap
                    store(*in_flight)
                    in_flight = None
                group, group_windows = [], 0
            if item is None:
                break
        if in_flight is not None:
            store(*in_flight)
        for write in writes:
            finish_write(write)
    non_finite = sum(why == NON_FINITE for why in skipped.values())
    forwarded = len(todo) - len(skipped) + non_finite  # the audio-s count exactly these clips
    if forwarded:
        s.log(watch.summary(info.name, forwarded, bar.audio_seconds, non_finite))
    route_notes = getattr(encoder, "route_notes", None)  # optional: see CONTRIBUTING.md
    for line in route_notes() if callable(route_notes) else []:
        s.log(f"{info.name}: {line}")
    return skipped
