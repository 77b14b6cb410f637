"""The arithmetic frozen extraction runs an encoder in: ``fp32``, ``bf16-autocast`` (fp32
weights under bf16 autocast) or ``bf16`` (weights cast to bf16, no autocast).

Why a choice: autocast keeps fp32 master weights and runs normalisations and softmax in fp32,
so every linear layer's input and output is cast on the way through; with the weights
themselves in bf16 those casts disappear (MERT-95M on an H200, 256 five-second windows: 7,438
against 6,308 audio-s/s). Fine-tuning needs fp32 master weights, so only frozen extraction
casts, and only encoders that say they run correctly that way
(:attr:`embench.Encoder.supports_bf16_weights`). The precision is part of the cache key and of
every result, so embeddings of different arithmetic never mix.

``auto`` (the default) is ``fp32`` on the CPU, and on CUDA ``bf16`` where the encoder allows
it, ``bf16-autocast`` otherwise; ``bf16`` likewise falls back to ``bf16-autocast`` for an
encoder whose weights must not be cast (logged, and recorded in its results). The CPU
default stays fp32 even where the CPU runs bf16 natively (AVX512-BF16, AMX), so the same
command gives the same arithmetic on every CPU; there extraction says that
``--precision bf16`` is available (on 2 such cores, end to end from WAV: MERT-95M
4.9 -> 11.4 audio-s/s, wav2vec2-base 7.4 -> 14.5; ``benchmarks/test_precision_speed.py``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from embench.errors import EmbenchError

if TYPE_CHECKING:
    import torch

    from embench.encoder import Encoder

PRECISIONS = ("auto", "fp32", "bf16-autocast", "bf16")


def resolve(requested: str, encoder: Encoder, device: torch.device) -> str:
    """The concrete precision ``requested`` means for ``encoder`` on ``device``."""
    if requested not in PRECISIONS:
        raise EmbenchError(f"precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    allows_bf16 = bool(getattr(encoder, "supports_bf16_weights", False))
    if requested == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if allows_bf16 else "bf16-autocast"
    if requested == "bf16" and not allows_bf16:
        # one run covers many encoders: the others still get bf16, this one the nearest thing
        # (extraction logs it, and the result records what ran)
        return "bf16-autocast"
    return requested


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (oneDNN's own check)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_hint(requested: str, encoder: Encoder, device: torch.device) -> str | None:
    """A one-line tip when ``auto`` chose fp32 on a CPU that would run bf16 weights natively."""
    if (requested != "auto" or device.type != "cpu"
            or not getattr(encoder, "supports_bf16_weights", False) or not native_bf16_cpu()):
        return None
    return (f"{encoder.info.name}: this CPU runs bf16 natively and this encoder supports bf16 "
            f"weights; try --precision bf16 (cached separately; MERT and wav2vec 2.0 extract "
            f"about twice as fast that way, within 1e-4 cosine of fp32)")


def default_for(device: torch.device) -> str:
    """What callers that never chose get: autocast on CUDA, fp32 elsewhere (no weight cast)."""
    return "bf16-autocast" if device.type == "cuda" else "fp32"


def context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast region ``precision`` needs around the encoder's forward (none for ``fp32``
    and for ``bf16``, whose weights are already bf16)."""
    import torch

    if precision == "bf16-autocast":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare(encoder: Encoder, precision: str, device: torch.device, weights: str,
            weights_path: str | None) -> None:
    """Load ``encoder`` if needed, with its weights in the dtype ``precision`` asks for. An
    encoder loaded earlier with other weights' dtype is reloaded from its checkpoint rather
    than cast back, so fp32 never means "bf16 rounded weights"."""
    import torch

    wanted = torch.bfloat16 if precision == "bf16" else None
    if encoder.loaded and getattr(encoder, "cast_dtype", None) != wanted:
        encoder.unload()
    if not encoder.loaded:
        encoder.load(device, weights, weights_path)
    if wanted is not None and getattr(encoder, "cast_dtype", None) != wanted:
        encoder.cast_weights(wanted)
        encoder.cast_dtype = wanted
