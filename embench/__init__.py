"""embench: which audio encoder's embeddings serve this music task best, and by how much?

The public API for plugin authors is what this module exports; everything else is internal.
Heavy modules (torch, the results models) load on first use, so ``import embench`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embench.encoder import Encoder, EncoderInfo
from embench.errors import (
    AudioDecodeError,
    EmbenchError,
    MissingDataError,
    MissingWeightsError,
)
from embench.hookspecs import hookimpl
from embench.task import SPLITS, Clip, ClipSet, EvalContext, Evaluation, Task, TaskInfo

__version__ = "0.1.0"

__all__ = [
    "SPLITS",
    "AudioDecodeError",
    "Clip",
    "ClipSet",
    "EmbenchError",
    "Encoder",
    "EncoderInfo",
    "EvalContext",
    "Evaluation",
    "Features",
    "ItemScores",
    "MissingDataError",
    "MissingWeightsError",
    "Task",
    "TaskInfo",
    "__version__",
    "evaluate_captioning",
    "evaluate_classification",
    "finetune_classification",
    "hookimpl",
    "load_audio",
]

if TYPE_CHECKING:
    from embench.audio import load_audio
    from embench.captioning import evaluate_captioning
    from embench.classification import evaluate_classification
    from embench.features import Features
    from embench.finetune import finetune_classification
    from embench.results import ItemScores

_LAZY = {
    "load_audio": "embench.audio",
    "Features": "embench.features",
    "ItemScores": "embench.results",
    "evaluate_captioning": "embench.captioning",
    "evaluate_classification": "embench.classification",
    "finetune_classification": "embench.finetune",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embench' has no attribute {name!r}")
