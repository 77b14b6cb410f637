"""``wav2vec2-base`` and ``wav2vec2-base-960h``: wav2vec 2.0 speech encoders (Baevski et al.,
NeurIPS 2020) as a speech-pretrained reference point for music tasks.

Both load into ``transformers.Wav2Vec2Model`` with an explicit base-architecture
``Wav2Vec2Config`` (12 post-LayerNorm layers x 768, group-norm CNN, no conv bias). The base
checkpoint is a pre-training checkpoint: its quantizer and projection heads are unused by
``Wav2Vec2Model``, which is expected and not reported; likewise the CTC head of ``-960h``.

Audio: 16 kHz mono, zero-mean unit-variance per window (both checkpoints' feature extractors
set ``do_normalize=True``), 50 frames per second, 13 hidden states (CNN + 12 layers).

Written only against embench's public API plus transformers/torch and ``hf_loading``.
"""

from __future__ import annotations

from typing import Any

from embench import hookimpl
from embench_plugins.hf_speech import BASE_ARCH, HFFrameEncoder, VariantSpec

SAMPLE_RATE = 16_000
# 10 s windows: pre-training crops were at most 250k samples (~15.6 s), so 10 s stays inside
# the trained context, and attention cost grows with the square of the window (500 frames
# here). Every window of a clip is the same length (the last one is end-aligned), because the
# core batches windows without padding: group norm over a padded window changes valid frames.
WINDOW_S = 10.0

_EXTRA = {
    "feature_extractor": "Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True)",
    "paper": "https://arxiv.org/abs/2006.11477",
}

VARIANTS: dict[str, VariantSpec] = {
    "wav2vec2-base": VariantSpec(
        name="wav2vec2-base",
        hf_id="facebook/wav2vec2-base",
        arch=dict(BASE_ARCH),  # = Wav2Vec2Config() defaults
        sample_rate=SAMPLE_RATE,
        window_s=WINDOW_S,
        description=(
            "wav2vec 2.0 base (12 transformer layers x 768), self-supervised on 960 h of "
            "LibriSpeech speech, no fine-tuning; 16 kHz, 50 Hz frames, 10 s windows; 13 hidden "
            "states (CNN + 12 layers). A speech model: a reference point for music tasks."
        ),
        # Hub commit ids could not be confirmed offline; do not pin an invented one.
        revision=None,
        extra=_EXTRA,
    ),
    "wav2vec2-base-960h": VariantSpec(
        name="wav2vec2-base-960h",
        hf_id="facebook/wav2vec2-base-960h",
        arch=dict(BASE_ARCH),
        sample_rate=SAMPLE_RATE,
        window_s=WINDOW_S,
        description=(
            "wav2vec 2.0 base fine-tuned for English speech recognition (CTC on 960 h of "
            "LibriSpeech); the CTC head is dropped. Its upper layers are specialised for "
            "characters, so wav2vec2-base is usually the better general feature. 16 kHz, 50 Hz "
            "frames, 10 s windows; 13 hidden states."
        ),
        revision=None,  # as above: not confirmable offline
        extra=_EXTRA,
    ),
}


class Wav2Vec2Encoder(HFFrameEncoder):
    """One wav2vec 2.0 variant. ``config`` (a ``Wav2Vec2Config``) overrides the architecture,
    e.g. a tiny model for tests; ``info`` then follows it and gets its own cache ``version``."""

    model_class_name = "Wav2Vec2Model"
    config_class_name = "Wav2Vec2Config"
    model_types = ("wav2vec2",)
    # Pre-training heads (base) and the CTC head (-960h): present in the checkpoints, unused here.
    ignore_unexpected = (r"^quantizer\.", r"^project_q\.", r"^project_hid\.", r"^lm_head\.")
    license = "Apache-2.0"
    citation = (
        "Baevski, A., Zhou, H., Mohamed, A., Auli, M. (2020). wav2vec 2.0: A Framework for "
        "Self-Supervised Learning of Speech Representations. NeurIPS 2020. arXiv:2006.11477."
    )
    homepage = "https://github.com/facebookresearch/fairseq/tree/main/examples/wav2vec"

    def __init__(self, variant: str = "wav2vec2-base", config: Any | None = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown wav2vec2 variant {variant!r}; choose from {list(VARIANTS)}")
        super().__init__(VARIANTS[variant], config=config)


@hookimpl
def register_encoders(register) -> None:
    """Entry point ``wav2vec2 = "embench_plugins.wav2vec2"`` makes the core call this."""
    for variant in VARIANTS:
        register(Wav2Vec2Encoder(variant))
