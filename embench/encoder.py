"""The Encoder interface: metadata first, weights loaded lazily, one forward method.

An encoder plugin describes itself with :class:`EncoderInfo` (readable without touching weights)
and implements :meth:`Encoder.load` and :meth:`Encoder.forward`. Everything else — decoding,
resampling, mono mixing, windowing long audio, batching, pooling and caching — is the core's job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported lazily so `embench --help` stays fast
    import torch

Weights = Literal["pretrained", "random"]


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder is, known before any weights are loaded.

    ``window_s``/``hop_s`` set how the core cuts long audio (``None``: the whole clip in one
    pass). ``random_init`` False says ``--weights random`` builds the very same encoder (a fixed
    transform with nothing to initialise): the core then runs and labels it as ``pretrained``,
    so a random-init control run adds no duplicate row falsely labelled "random init".
    ``version`` must change whenever the encoder's output changes for the same weights,
    because it is part of the embedding cache key.
    """

    name: str
    sample_rate: int
    num_layers: int
    dims: tuple[int, ...]
    frame_rate: float
    description: str = ""
    hf_id: str | None = None
    revision: str | None = None
    window_s: float | None = None
    hop_s: float | None = None
    min_samples: int = 1
    license: str = ""
    citation: str = ""
    homepage: str = ""
    version: str = "1"
    random_init: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.dims) not in (1, self.num_layers):
            raise ValueError(
                f"{self.name}: dims must hold one entry or one per layer ({self.num_layers})"
            )
        if self.hop_s is not None and self.window_s is None:
            raise ValueError(f"{self.name}: hop_s needs window_s")

    def layer_dim(self, layer: int) -> int:
        return self.dims[0] if len(self.dims) == 1 else self.dims[layer]

    def as_dict(self) -> dict:
        return asdict(self)


class Encoder(ABC):
    """Base class for encoder plugins. Subclasses set ``info`` and implement two methods.

    ``load`` is called at most once per run, only when some clip is not already cached.
    """

    info: EncoderInfo
    #: True when ``forward`` runs correctly with its weights cast to bf16 and no autocast
    #: (:meth:`cast_weights`); frozen extraction on CUDA then does so by default
    #: (``--precision``). Leave it False if any part of the model must stay fp32.
    supports_bf16_weights: bool = False

    def __init__(self) -> None:
        self.device: torch.device | None = None
        self.weights: Weights | None = None
        #: The dtype :meth:`cast_weights` last cast the loaded weights to (set by the core).
        self.cast_dtype: torch.dtype | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def loaded(self) -> bool:
        return self.device is not None

    @abstractmethod
    def load(
        self, device: torch.device, weights: Weights = "pretrained", weights_path: str | None = None
    ) -> None:
        """Build the model on ``device``: pretrained weights (hub cache or ``weights_path``) or a
        seeded random initialisation of the same architecture. Must set ``self.device`` and
        ``self.weights``; raise :class:`embench.errors.MissingWeightsError` when offline."""

    @abstractmethod
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor | Sequence[torch.Tensor]:
        """Map ``[batch, samples]`` mono float32 audio at ``info.sample_rate`` to hidden states.

        Return ``[batch, layers, frames, dim]``, or one ``[batch, frames_l, dim_l]`` tensor per
        layer when layers differ in frame rate or width. All windows in a batch have equal length.
        """

    def weights_revision(self, weights: Weights, weights_path: str | None) -> str | None:
        """The exact revision of the pretrained weights :meth:`load` will read, found without
        loading them: e.g. the commit of the hub snapshot in the local cache, where
        ``info.revision`` names only a branch or nothing. None: ``info.revision`` says it.

        The core calls it before the cache lookup, for pretrained weights only, and keys the
        embedding cache and labels results with the answer, so weights updated on the hub never
        reuse the embeddings of the ones before. ``load`` must then read that revision.
        """
        return None

    def trainable_module(self) -> torch.nn.Module:
        """The ``nn.Module`` a fine-tuning protocol unfreezes. Weight-free encoders have none."""
        raise TypeError(f"Encoder {self.name!r} has no trainable module; use a frozen protocol.")

    def cast_weights(self, dtype: torch.dtype) -> None:
        """Cast the loaded weights to ``dtype`` for frozen extraction (called after
        :meth:`load`, only when :attr:`supports_bf16_weights`). ``forward`` must then accept
        float32 waveforms and cast them itself. Fine-tuning always gets a fresh fp32 load."""
        raise TypeError(f"Encoder {self.name!r} does not support casting its weights; "
                        f"use --precision bf16-autocast.")

    def unload(self) -> None:
        """Free the weights; the encoder can be loaded again later."""
        self.device = None
        self.weights = None
        self.cast_dtype = None
