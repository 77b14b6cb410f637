"""Build real cached :class:`Features` (and matching clip sets / contexts) for tests, without an
encoder: write per-layer arrays through :class:`EmbeddingCache` exactly as extraction would."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from embench.cache import CacheKey, EmbeddingCache
from embench.features import Features
from embench.task import Clip, ClipSet, EvalContext, Split


def cache_key(encoder: str = "fake-encoder", dataset_id: str = "synthetic") -> CacheKey:
    return CacheKey(
        encoder=encoder, encoder_version="1", weights="pretrained", revision=None,
        sample_rate=16000, window_s=None, hop_s=None, frame_rate=1.0, compute_dtype="float32",
        dataset_id=dataset_id, dataset_revision=None,
    )


def build_features(root: Path, per_clip: dict[str, Sequence[np.ndarray]],
                   encoder: str = "fake-encoder", dataset_id: str = "synthetic",
                   duration_s: float = 1.0) -> Features:
    """Cache ``clip id -> per-layer [frames, dim] arrays`` in one shard under ``root`` and return
    the Features view over them (in ``per_clip`` order)."""
    cache = EmbeddingCache(Path(root), cache_key(encoder, dataset_id))
    cache.prepare()
    cache.write_shard({cid: (duration_s, list(layers)) for cid, layers in per_clip.items()})
    first = next(iter(per_clip.values()))
    dims = tuple(int(a.shape[1]) for a in first)
    return Features(cache=cache, clip_ids=list(per_clip), num_layers=len(first),
                    dims=dims if len(set(dims)) > 1 else (dims[0],))


def features_from_means(root: Path, clip_ids: Sequence[str], layer_means: Sequence[np.ndarray],
                        frames: int = 2, **kwargs) -> Features:
    """Cache clips whose per-layer time average is ``layer_means[l][i]`` (up to fp16 rounding):
    the frames are the mean plus offsets that cancel."""
    offsets = np.linspace(-0.5, 0.5, frames, dtype=np.float32)[:, None]
    per_clip = {
        cid: [m[i][None, :] + offsets for m in layer_means] for i, cid in enumerate(clip_ids)
    }
    return build_features(root, per_clip, **kwargs)


def synthetic_classification(
    n_per_split: dict[Split, int] | None = None,
    n_classes: int = 3,
    num_layers: int = 4,
    dim: int = 16,
    signal_layer: int | None = 2,
    signal: float = 3.0,
    seed: int = 0,
) -> tuple[ClipSet, list[np.ndarray]]:
    """A clip set with balanced labels and per-layer clip means (in clip order) where only
    ``signal_layer`` separates the classes (class centroids ``signal`` apart); every other layer
    is pure noise."""
    rng = np.random.default_rng(seed)
    n_per_split = n_per_split or {"train": 60, "valid": 30, "test": 30}
    labels = tuple(f"class{k}" for k in range(n_classes))
    clips, ys = [], []
    for split, n in n_per_split.items():
        for i in range(n):
            y = i % n_classes
            clips.append(Clip(id=f"{split}-{i:04d}", source=Path(f"{split}-{i}.wav"),
                              target=labels[y], split=split))
            ys.append(y)
    y_arr = np.array(ys)
    means = [rng.normal(size=(len(clips), dim)).astype(np.float32) for _ in range(num_layers)]
    if signal_layer is not None:
        centroids = rng.normal(size=(n_classes, dim)).astype(np.float32)
        centroids *= signal / np.linalg.norm(centroids, axis=1, keepdims=True) * np.sqrt(dim) / 2
        means[signal_layer] += centroids[y_arr]
    return ClipSet(dataset_id="synthetic", split_id="synthetic-v1", clips=clips,
                   labels=labels), means


def make_context(clips: ClipSet, features: Features | None, root: Path,
                 seeds: Sequence[int] = (0,), protocol: str = "probe",
                 log: Callable[[str], None] | None = None) -> EvalContext:
    return EvalContext(clips=clips, protocol=protocol, seeds=list(seeds),
                       device=torch.device("cpu"), output_dir=Path(root) / "out",
                       features=features, log=log or (lambda _msg: None))
