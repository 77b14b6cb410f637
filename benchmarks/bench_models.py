"""Encoders and audio for the benchmarks: each family at a tiny and at the real size; and the
cache writer as it was before the device flagged non-finite clips, the baseline of two of them.

Tiny architectures are the ones the unit tests use (tests/test_mert.py, test_wav2vec2.py,
test_clap.py), repeated here so a benchmark does not import test modules; real sizes come from
the registry. All weights are ``"random"`` (seeded, no download).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from embench.extract import _write_shard

CPU = torch.device("cpu")
WAV_RATE = 22_050  # GTZAN's rate: every encoder's loader has to resample it

_HF_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
_CLAP_TINY = {"depths": [1, 1], "num_attention_heads": [2, 2], "patch_embeds_hidden_size": 16,
              "hidden_size": 32, "projection_dim": 24}

#: family -> registry name of its real-size encoder
REAL = {"melspec": "melspec", "mert": "mert-v1-95m", "mert-330m": "mert-v1-330m",
        "wav2vec2": "wav2vec2-base", "clap": "clap-music"}


def make_encoder(family: str, size: str):
    """An unloaded encoder of ``family`` ("melspec", "mert", "mert-330m", "wav2vec2", "clap") at
    ``size`` ("tiny" or "real"). melspec has no weights, so it has one size only."""
    if size == "real":
        from embench.plugins import get_registry

        return get_registry().encoder(REAL[family])
    if size != "tiny" or family in ("melspec", "mert-330m"):
        raise ValueError(f"no {size!r} size of {family!r}")
    if family == "mert":
        from transformers import HubertConfig

        from embench_plugins.mert import MertEncoder

        return MertEncoder("mert-v1-95m", config=HubertConfig(**_HF_TINY))
    if family == "wav2vec2":
        from transformers import Wav2Vec2Config

        from embench_plugins.wav2vec2 import Wav2Vec2Encoder

        return Wav2Vec2Encoder("wav2vec2-base", config=Wav2Vec2Config(**_HF_TINY))
    if family == "clap":
        from transformers import ClapAudioConfig

        from embench_plugins.clap import Clap

        return Clap("clap-music", config=ClapAudioConfig(**_CLAP_TINY))
    raise ValueError(f"unknown encoder family {family!r}")


def noise_clips(n: int, seconds: float, sample_rate: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` decoded clips of quiet white noise (model cost does not depend on the content)."""
    gen = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(int(seconds * sample_rate), generator=gen) for _ in range(n)]


def write_wavs(folder: Path, n: int, seconds: float, seed: int = 0, prefix: str = "clip"):
    """``n`` 16-bit mono WAV files of ``seconds`` at 22.05 kHz in ``folder``; returns a
    :class:`ClipSet` over them (all in the train split, target "x")."""
    import soundfile as sf

    from embench import Clip, ClipSet

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        path = folder / f"{prefix}{i:05d}.wav"
        audio = (0.1 * rng.standard_normal(int(seconds * WAV_RATE))).astype(np.float32)
        sf.write(path, audio, WAV_RATE, subtype="PCM_16")
        clips.append(Clip(f"{prefix}{i:05d}", path, "x", "train"))
    return ClipSet(f"bench/{folder.name}", "none", clips)


def scan_then_write(cache, shard: dict) -> None:
    """The cache writer before the device flagged non-finite clips: ``isfinite`` and ``all`` on
    every array of ``shard`` (each lets the GIL go and waits to get it back), then the write of
    the finite clips by today's writer (bound at import, so this can stand in for it)."""
    bad = [cid for cid, (_, layers) in shard.items()
           if not all(np.isfinite(a).all() for a in layers)]
    _write_shard(cache, {cid: v for cid, v in shard.items() if cid not in bad})
