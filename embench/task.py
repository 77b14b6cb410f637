"""The Task interface: a metadata record, a loader, and protocols that turn features into scores.

A task plugin describes its dataset with :class:`TaskInfo`, returns a :class:`ClipSet` from
``load`` (clips with targets and split membership) and scores one encoder in ``evaluate``.
The core hands ``evaluate`` an :class:`EvalContext` holding cached features (frozen protocols)
or the encoder itself (fine-tuning protocols).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from embench.encoder import Encoder
    from embench.features import Features
    from embench.results import ItemScores

Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class TaskInfo:
    """What a task measures and on which data. ``version`` changes whenever scores stop being
    comparable (new split, new metric code); results record it."""

    name: str
    dataset_id: str
    main_score: str
    protocols: tuple[str, ...]
    description: str = ""
    dataset_revision: str | None = None
    version: str = "1"
    higher_is_better: bool = True
    requires_features: tuple[str, ...] = ()
    citation: str = ""
    homepage: str = ""
    license: str = ""

    @property
    def default_protocol(self) -> str:
        return self.protocols[0]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Clip:
    """One audio item. ``source`` is a file path or encoded bytes (e.g. from a parquet file);
    ``start_s``/``end_s`` crop a longer recording."""

    id: str
    source: Path | bytes
    target: Any
    split: Split
    start_s: float | None = None
    end_s: float | None = None

    def describe_source(self) -> str:
        return str(self.source) if isinstance(self.source, Path) else f"<bytes of clip {self.id}>"


@dataclass
class ClipSet:
    """The clips of one task on one split definition. ``split_id`` names the split definition and
    goes into every result so that numbers from different splits never share a table.
    ``missing`` lists (clip id, reason) for clips the split names but the data lacks;
    ``dataset_revision`` is the revision actually loaded (default: the task's pinned one)."""

    dataset_id: str
    split_id: str
    clips: list[Clip]
    labels: tuple[str, ...] = ()
    missing: list[tuple[str, str]] = field(default_factory=list)
    dataset_revision: str | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for clip in self.clips:
            if clip.id in seen:
                raise ValueError(f"duplicate clip id {clip.id!r} in {self.dataset_id}")
            seen.add(clip.id)

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[Clip]:
        return iter(self.clips)

    def split(self, name: Split) -> list[Clip]:
        return [c for c in self.clips if c.split == name]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.split == s for c in self.clips) for s in SPLITS}


@dataclass
class EvalContext:
    """Everything a protocol may use. ``features`` is set for protocols that read cached
    embeddings; ``encoder`` (not yet loaded) for protocols that need the model (fine-tuning),
    which load it with ``encoder.load(device, weights, weights_path)``."""

    clips: ClipSet
    protocol: str
    seeds: list[int]
    device: torch.device
    output_dir: Path
    features: Features | None = None
    encoder: Encoder | None = None
    weights: str = "pretrained"
    weights_path: str | None = None
    log: Callable[[str], None] = print
    #: ``embench run --captioner``: the T5 a captioning protocol should use instead of its
    #: default (a hub id, a ``save_pretrained`` folder, or ``"scratch"``); None: the default
    captioner: str | None = None


@dataclass
class Evaluation:
    """What ``Task.evaluate`` returns: per-seed scores for each metric (``scores[m][i]`` belongs to
    ``seeds[i]``), trivial baselines on the same split, and JSON-able details."""

    scores: dict[str, list[float]]
    train_scores: dict[str, list[float]] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # clip id -> reason, for protocols
    # that decode audio themselves (fine-tuning); frozen protocols' skips come from the cache
    #: the main score of each test clip per seed, when the main score is their mean (accuracy:
    #: 100 or 0 per clip); leaderboards compare rows paired on these (see ItemScores)
    item_scores: ItemScores | None = None


class Task(ABC):
    """Base class for task plugins."""

    info: TaskInfo

    @property
    def name(self) -> str:
        return self.info.name

    @abstractmethod
    def load(self, data_dir: Path) -> ClipSet:
        """Find the task's data under ``data_dir`` (generating or downloading only where the task
        is offline by nature); raise :class:`embench.errors.MissingDataError` saying what to do."""

    @abstractmethod
    def evaluate(self, ctx: EvalContext) -> Evaluation:
        """Score one encoder with ``ctx.protocol``: select models on validation, touch test once
        per seed."""

    def requires_features(self, protocol: str) -> bool:
        """Whether ``protocol`` reads cached embeddings (so the core extracts them first)."""
        return protocol in self.info.requires_features
