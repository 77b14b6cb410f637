"""Read-side view of cached embeddings for one (encoder, dataset), in the dataset's clip order.

Protocols use this instead of touching the cache: per-layer clip means for probes, frame
sequences for sequence models (captioners), and the list of clips that were skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embench.cache import EmbeddingCache


@dataclass
class Features:
    cache: EmbeddingCache
    clip_ids: list[str]
    num_layers: int
    dims: tuple[int, ...]
    skipped: dict[str, str] = field(default_factory=dict)

    def layer_dim(self, layer: int) -> int:
        return self.dims[0] if len(self.dims) == 1 else self.dims[layer]

    @property
    def same_width(self) -> bool:
        return len(set(self.dims)) == 1

    def frames(self, layer: int, clip_ids: list[str] | None = None) -> list[np.ndarray]:
        """``[frames, dim]`` float32 arrays of one layer, one per clip."""
        ids = self.clip_ids if clip_ids is None else clip_ids
        return [a.astype(np.float32) for a in self.cache.read_many(ids, layer)]

    def clip_means(self, layer: int, clip_ids: list[str] | None = None) -> np.ndarray:
        """``[clips, dim]`` float32: each clip's frames averaged over time."""
        ids = self.clip_ids if clip_ids is None else clip_ids
        arrays = self.cache.read_many(ids, layer)
        return np.stack([a.astype(np.float32).mean(axis=0) for a in arrays])

    def all_clip_means(self, clip_ids: list[str] | None = None) -> list[np.ndarray]:
        """One ``[clips, dim_l]`` array per layer."""
        return [self.clip_means(layer, clip_ids) for layer in range(self.num_layers)]
