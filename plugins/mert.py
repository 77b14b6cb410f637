"""``mert-v1-95m`` and ``mert-v1-330m``: MERT-v1 music encoders (Li et al., ICLR 2024).

MERT-v1 checkpoints load into the built-in ``transformers.HubertModel`` with no remote code and
no key renaming (checked: outputs identical to the authors' code). ``trust_remote_code`` is never
used: besides running downloaded code, under transformers 5 the authors' code returns no hidden
states. The hub config names a remote model type ("mert_model"), so the architecture is written
out here as an explicit ``HubertConfig``.

Audio: 24 kHz mono, zero-mean unit-variance per window (what ``Wav2Vec2FeatureExtractor(
sampling_rate=24000, do_normalize=True)`` does), 5 s windows (MERT's pre-training context), 75
frames per second. Output: every hidden state (13 for 95M, 25 for 330M), as the model card's
recipe (all layers, mean over time, learned weighted sum) needs.

Written only against embench's public API plus transformers/torch and ``hf_loading``.
"""

from __future__ import annotations

from typing import Any

from embench import hookimpl
from embench_plugins.hf_speech import BASE_ARCH, HFFrameEncoder, VariantSpec

SAMPLE_RATE = 24_000
WINDOW_S = 5.0  # MERT-v1 was pre-trained on 5 s crops; longer context is out of distribution

_MERT_EXTRA = {
    "feature_extractor": "Wav2Vec2FeatureExtractor(sampling_rate=24000, do_normalize=True)",
    "pretraining_context_s": "5",
    "paper": "https://arxiv.org/abs/2306.00107",
}

VARIANTS: dict[str, VariantSpec] = {
    "mert-v1-95m": VariantSpec(
        name="mert-v1-95m",
        hf_id="m-a-p/MERT-v1-95M",
        arch=dict(BASE_ARCH),  # = HubertConfig() defaults: 12 layers x 768, group norm
        sample_rate=SAMPLE_RATE,
        window_s=WINDOW_S,
        description=(
            "MERT-v1-95M: HuBERT-style music encoder (12 transformer layers x 768) pre-trained "
            "with acoustic (RVQ-VAE) and musical (CQT) teachers on 20k h of music; 24 kHz, "
            "75 Hz frames, 5 s windows; 13 hidden states (CNN + 12 layers)."
        ),
        # Hub commit ids could not be confirmed offline; do not pin an invented one.
        revision=None,
        extra=_MERT_EXTRA,
    ),
    "mert-v1-330m": VariantSpec(
        name="mert-v1-330m",
        hf_id="m-a-p/MERT-v1-330M",
        arch={
            **BASE_ARCH,
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "do_stable_layer_norm": True,
            "feat_extract_norm": "group",
            "conv_bias": False,
            # Without it transformers 5 returns the last hidden state *before* the final
            # LayerNorm, which differs from the model card (and from transformers 4).
            "tie_last_hidden_states": True,
        },
        sample_rate=SAMPLE_RATE,
        window_s=WINDOW_S,
        description=(
            "MERT-v1-330M: HuBERT-style music encoder (24 pre-LayerNorm transformer layers x "
            "1024) pre-trained with acoustic (RVQ-VAE) and musical (CQT) teachers on 160k h of "
            "music; 24 kHz, 75 Hz frames, 5 s windows; 25 hidden states (CNN + 24 layers)."
        ),
        revision=None,  # as above: not confirmable offline
        extra={**_MERT_EXTRA, "last_layer": "after the final LayerNorm (pre-LN transformer)"},
    ),
}


class MertEncoder(HFFrameEncoder):
    """One MERT-v1 variant. ``config`` (a ``HubertConfig``) overrides the architecture, e.g. a
    tiny model for tests; ``info`` then follows it and gets its own cache ``version``."""

    model_class_name = "HubertModel"
    config_class_name = "HubertConfig"
    # "mert_model": the hub checkpoints; "hubert": a folder written by save_pretrained.
    model_types = ("mert_model", "hubert")
    license = "CC-BY-NC-4.0"
    citation = (
        "Li, Y., Yuan, R., Zhang, G., Ma, Y., et al. (2024). MERT: Acoustic Music Understanding "
        "Model with Large-Scale Self-supervised Training. ICLR 2024. arXiv:2306.00107."
    )
    homepage = "https://github.com/yizhilll/MERT"

    def __init__(self, variant: str = "mert-v1-95m", config: Any | None = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown MERT variant {variant!r}; choose from {list(VARIANTS)}")
        super().__init__(VARIANTS[variant], config=config)


@hookimpl
def register_encoders(register) -> None:
    """Entry point ``mert = "embench_plugins.mert"`` makes the core call this."""
    for variant in VARIANTS:
        register(MertEncoder(variant))
