"""Batched embedding extraction into the cache.

Files are decoded and resampled in DataLoader worker processes; the main process cuts windows,
batches windows of equal length (never padding), runs the encoder under ``inference_mode``
(bf16 autocast on CUDA), pools every layer onto the cache's fixed frame rate and hands finished
clips to a background writer that stores them as fp16 shards. Clips already in the cache are
not decoded again, and the encoder's weights are loaded only if some clip needs them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from embench.audio import load_audio
from embench.cache import CacheKey, EmbeddingCache, weights_fingerprint
from embench.encoder import Encoder, Weights
from embench.errors import AudioDecodeError, EmbenchError
from embench.features import Features
from embench.progress import ExtractionProgress
from embench.task import Clip, ClipSet
from embench.windowing import FramePooler, Window, plan_windows


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an unusable explicit choice is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise EmbenchError(
            f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EmbenchError(
            f"--device {spec} asked for CUDA, but torch sees no GPU here (torch "
            f"{torch.__version__}). Use --device cpu, or install a CUDA build of torch."
        )
    return device


def compute_dtype(device: torch.device) -> str:
    return "bf16-autocast" if device.type == "cuda" else "fp32"


def default_num_workers() -> int:
    """Leave one core to the main process (which runs the model on CPU)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def cache_key(encoder: Encoder, clips: ClipSet, weights: str, frame_rate: float,
              device: torch.device, weights_path: str | None = None) -> CacheKey:
    info = encoder.info
    return CacheKey(
        encoder=info.name, encoder_version=info.version, weights=weights, revision=info.revision,
        weights_source=weights_fingerprint(weights_path) if weights == "pretrained" else None,
        sample_rate=info.sample_rate, window_s=info.window_s, hop_s=info.hop_s,
        frame_rate=frame_rate, compute_dtype=compute_dtype(device),
        dataset_id=clips.dataset_id, dataset_revision=clips.dataset_revision,
    )


class _Decoded(NamedTuple):  # a NamedTuple so DataLoader's pin_memory reaches the tensor
    clip_id: str
    audio: torch.Tensor | None
    error: str | None


class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes one clip per item in a worker; errors travel back as data, never as crashes."""

    def __init__(self, clips: Sequence[Clip], sample_rate: int):
        self.clips, self.sample_rate = list(clips), sample_rate

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> _Decoded:
        clip = self.clips[i]
        try:
            audio = load_audio(clip.source, self.sample_rate, clip.start_s, clip.end_s,
                               name=clip.describe_source())
        except AudioDecodeError as exc:
            return _Decoded(clip.id, None, exc.reason)
        return _Decoded(clip.id, torch.from_numpy(audio), None)


def _groups(items, size: int):
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    group = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _as_layers(out: torch.Tensor | Sequence[torch.Tensor], encoder: Encoder) -> list[torch.Tensor]:
    """Normalise an encoder's output to one ``[batch, frames, dim]`` tensor per layer and check
    it against the encoder's own metadata (a mismatch is a plugin bug worth a clear message)."""
    layers = list(out.unbind(1)) if isinstance(out, torch.Tensor) else list(out)
    info = encoder.info
    if len(layers) != info.num_layers:
        raise EmbenchError(f"encoder {info.name!r} returned {len(layers)} layers but its info "
                           f"declares num_layers={info.num_layers}")
    for i, layer in enumerate(layers):
        if layer.ndim != 3 or layer.shape[-1] != info.layer_dim(i):
            raise EmbenchError(f"encoder {info.name!r} layer {i} has shape {tuple(layer.shape)}; "
                               f"expected [batch, frames, {info.layer_dim(i)}]")
    return layers


def embed_waveforms(encoder: Encoder, waves: list[torch.Tensor], frame_rate: float,
                    batch_size: int) -> list[list[np.ndarray]]:
    """Per clip, per layer: ``[frames at frame_rate, dim]`` fp16 arrays."""
    info, device = encoder.info, encoder.device
    sr = info.sample_rate
    buckets: dict[int, list[tuple[int, Window]]] = defaultdict(list)
    for ci, wave in enumerate(waves):
        for w in plan_windows(len(wave), sr, info.window_s, info.hop_s):
            buckets[w.length].append((ci, w))
    pooler = FramePooler([len(w) / sr for w in waves], frame_rate, info.num_layers)
    # Whole clips go to the device once (pinned by the DataLoader: asynchronous); windows are
    # sliced and stacked there, so nothing in the loop waits for the GPU.
    on_device = [w.to(device, non_blocking=True) for w in waves]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        for length in sorted(buckets):
            items = buckets[length]
            for b0 in range(0, len(items), batch_size):
                chunk = items[b0:b0 + batch_size]
                batch = torch.stack([on_device[ci][w.start:w.end] for ci, w in chunk])
                windows = pooler.windows([ci for ci, _ in chunk],
                                         [w.start / sr for _, w in chunk],
                                         [w.length / sr for _, w in chunk], device)
                for li, layer in enumerate(_as_layers(encoder.forward(batch), encoder)):
                    pooler.add(li, windows, layer)
    return [[layer.half().numpy() for layer in clip] for clip in pooler.result()]


@dataclass
class _Settings:
    device: torch.device
    frame_rate: float
    batch_size: int
    num_workers: int
    weights: Weights
    weights_path: str | None
    show_progress: bool


def extract(
    encoder: Encoder,
    clips: ClipSet,
    cache_root: Path,
    *,
    device: torch.device,
    frame_rate: float = 1.0,
    batch_size: int = 16,
    num_workers: int | None = None,
    weights: Weights = "pretrained",
    weights_path: str | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> Features:
    """Make sure every decodable clip of ``clips`` is in the cache; return the cached features."""
    info = encoder.info
    settings = _Settings(device, frame_rate, batch_size,
                         default_num_workers() if num_workers is None else num_workers,
                         weights, weights_path, show_progress)
    cache = EmbeddingCache(cache_root, cache_key(encoder, clips, weights, frame_rate, device,
                                                     weights_path))
    cache.prepare()
    done = cache.done_ids()
    todo = [c for c in clips if c.id not in done]
    skipped: dict[str, str] = {}
    if todo:
        log(f"{info.name}: {len(clips) - len(todo)} of {len(clips)} clips cached, "
            f"extracting {len(todo)} into {cache.dir}")
        skipped = _extract_missing(encoder, todo, cache, settings)
    else:
        log(f"{info.name}: all {len(clips)} clips cached in {cache.dir}")
    index = cache.index()
    dims = info.dims if len(info.dims) == info.num_layers else info.dims * info.num_layers
    return Features(cache=cache, clip_ids=[c.id for c in clips if c.id in index],
                    num_layers=info.num_layers, dims=tuple(dims), skipped=skipped)


def _extract_missing(encoder: Encoder, todo: list[Clip], cache: EmbeddingCache,
                     s: _Settings) -> dict[str, str]:
    threads = torch.get_num_threads()
    if s.device.type == "cpu" and s.num_workers:
        # Decode workers take cores too; an oversubscribed OpenMP pool in this process spins
        # and turns millisecond ops into scheduler-quantum waits.
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - s.num_workers)))
    try:
        return _run_loader(encoder, todo, cache, s)
    finally:
        torch.set_num_threads(threads)


def _run_loader(encoder: Encoder, todo: list[Clip], cache: EmbeddingCache,
                s: _Settings) -> dict[str, str]:
    info = encoder.info
    # One clip per worker task, so every worker decodes in parallel; the main process groups
    # ``batch_size`` decoded clips, whose windows then form the forward batches.
    loader = torch.utils.data.DataLoader(
        _DecodeDataset(todo, info.sample_rate), batch_size=None, num_workers=s.num_workers,
        worker_init_fn=_worker_init if s.num_workers else None,
        pin_memory=s.device.type == "cuda",
        prefetch_factor=max(2, 2 * s.batch_size // max(1, s.num_workers)) if s.num_workers
        else None,
    )
    skipped: dict[str, str] = {}
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=1) as writer, \
            ExtractionProgress(f"extract {info.name}", len(todo), s.show_progress) as bar:
        for batch in _groups(loader, s.batch_size):
            ok = []
            for item in batch:
                if item.error is not None:
                    skipped[item.clip_id] = item.error
                elif len(item.audio) < info.min_samples:
                    skipped[item.clip_id] = (f"too short for {info.name}: {len(item.audio)} "
                                             f"samples < {info.min_samples}")
                else:
                    ok.append(item)
            if ok:
                if not encoder.loaded:
                    encoder.load(s.device, s.weights, s.weights_path)
                pooled = embed_waveforms(encoder, [it.audio for it in ok], s.frame_rate,
                                         s.batch_size)
                shard = {it.clip_id: (len(it.audio) / info.sample_rate, layers)
                         for it, layers in zip(ok, pooled, strict=True)}
                while len(pending) >= 2:  # bound the memory held by unwritten shards
                    pending.pop(0).result()
                pending.append(writer.submit(cache.write_shard, shard))
            bar.advance(len(batch), sum(len(it.audio) for it in ok) / info.sample_rate)
        for fut in pending:
            fut.result()
    return skipped
