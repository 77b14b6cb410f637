"""The captioning ``finetune`` protocol on a tiny random-weight MERT and three sound types with
fixed captions: two seeds run end to end, every seed has the caption metrics, JSONL is written,
and a weight-free encoder is refused with a pointer to the frozen protocol."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import HubertConfig

from embench import Clip, ClipSet, EmbenchError, EvalContext
from embench.finetune_captioning import finetune_captioning
from embench_plugins.melspec import MelSpec
from embench_plugins.mert import MertEncoder

SR = 24_000
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
            mask_time_length=2)
CAPTIONS = {"tone": "a calm low tone", "noise": "loud white noise", "clicks": "fast steady clicks"}
FAST = dict(captioner="scratch", epochs=2, lr_encoder=1e-3, lr_head=3e-3, batch_size=4,
            patience=2, num_beams=2, max_new_tokens=8, crop_s=0.5)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_clips(root: Path) -> list[Clip]:
    """Per sound type 4 train / 1 valid / 1 test clips of 1 s at 24 kHz."""
    rng = np.random.default_rng(0)
    clips = []
    for kind, caption in CAPTIONS.items():
        for i in range(6):
            if kind == "tone":
                audio = np.sin(2 * np.pi * 220 * (1 + 0.1 * rng.random()) * np.arange(SR) / SR)
            elif kind == "noise":
                audio = rng.standard_normal(SR)
            else:
                audio = np.zeros(SR)
                audio[rng.integers(0, 960)::960] = 1.0
            path = root / f"{kind}{i}.wav"
            sf.write(path, (0.3 * audio).astype(np.float32), SR)
            clips.append(Clip(f"{kind}{i}", path, caption,
                              "train" if i < 4 else "valid" if i < 5 else "test"))
    return clips


def context(root: Path, encoder, seeds: list[int]) -> EvalContext:
    clips = ClipSet("test/captions3", "fixed", write_clips(root))
    return EvalContext(clips=clips, protocol="finetune", seeds=seeds, device=torch.device("cpu"),
                       output_dir=root, encoder=encoder, weights="random")


def test_two_seeds_score_and_write_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no t5-small here
    encoder = MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))
    ctx = replace(context(tmp_path, encoder, [1, 2]), captioner="scratch")  # --captioner
    result = finetune_captioning(ctx, **{**FAST, "captioner": "t5-small"})
    assert result.details["captioner"] == "scratch"
    assert result.details["hyperparameters"]["captioner"] == "scratch"
    assert result.details["captioner_revision"] is None  # no hub weights to name
    for key in ("bleu1", "bleu4", "rouge_l", "wer"):
        assert len(result.scores[key]) == 2
    assert "constant-caption" in result.baselines
    assert [s["seed"] for s in result.details["seeds"]] == [1, 2]
    assert result.details["n_clips"] == {"train": 12, "valid": 3, "test": 3}
    assert result.item_scores.aggregate == "bleu" and len(result.item_scores.clip_ids) == 3
    assert result.item_scores.problems([1, 2], result.scores) == []
    for seed in (1, 2):
        rows = [json.loads(line) for line in
                (tmp_path / f"captions-seed{seed}.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and {r["reference"] for r in rows} == set(CAPTIONS.values())
        assert all(isinstance(r["hypothesis"], str) for r in rows)
    assert not encoder.loaded


def test_weight_free_encoder_is_refused(tmp_path):
    with pytest.raises(EmbenchError, match="--protocol frozen"):
        finetune_captioning(context(tmp_path, MelSpec(), [0]), **FAST)
