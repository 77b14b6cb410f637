"""The frozen captioning protocol on a tiny synthetic problem where the caption is determined by
which of three feature clusters a clip sits in."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from embench import captioning
from embench.caption_model import IGNORE_INDEX, WordTokenizer, collate
from embench.captioning import FLAG_NOT_BEATING_CONSTANT, evaluate_captioning
from embench.errors import MissingWeightsError
from embench.task import Clip, ClipSet
from tests.helpers_features import build_features, make_context
from tests.helpers_hub import snapshot_folder

CAPTIONS = ("a slow calm piano piece", "a fast loud drum track", "a bright synth melody")
FAST = dict(captioner="scratch", epochs=40, lr=3e-3, batch_size=16, num_beams=2,
            max_new_tokens=12, patience=6)


def caption_problem(root: Path, n: dict[str, int] | None = None, frames: int = 3,
                    dim: int = 16, num_layers: int = 2, seed: int = 0):
    """Clips whose frames sit near one of three centroids in layer 1 (layer 0 is noise); the
    caption is the centroid's."""
    rng = np.random.default_rng(seed)
    n = n or {"train": 60, "valid": 15, "test": 15}
    centroids = rng.normal(size=(3, dim)).astype(np.float32) * 2.0
    clips, per_clip = [], {}
    for split, count in n.items():
        for i in range(count):
            k = i % 3
            cid = f"{split}-{i:03d}"
            clips.append(Clip(id=cid, source=Path(f"{cid}.wav"), target=CAPTIONS[k],
                              split=split))
            layers = [rng.normal(size=(frames, dim)).astype(np.float32)
                      for _ in range(num_layers)]
            layers[1] = layers[1] * 0.5 + centroids[k]
            per_clip[cid] = layers
    clipset = ClipSet(dataset_id="synthetic-captions", split_id="v1", clips=clips)
    return clipset, build_features(root / "cache", per_clip)


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    return caption_problem(tmp_path_factory.mktemp("captions"))


@pytest.fixture(scope="module")
def scratch_run(problem, tmp_path_factory):
    clips, features = problem
    ctx = make_context(clips, features, tmp_path_factory.mktemp("run"), seeds=[0])
    return ctx, evaluate_captioning(ctx, **FAST)


def test_tokenizer_round_trip_and_training_only_vocabulary():
    tok = WordTokenizer(["A slow, calm piano piece.", "a fast drum track"])
    ids = tok.encode("a SLOW piano piece")
    assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids) == "a slow piano piece"
    assert tok.decode([tok.pad_token_id, *ids, 5, 6]) == "a slow piano piece"  # stops at eos
    assert tok.encode("a violin")[1] == tok.unk_token_id  # unseen word: unknown, not added
    assert "violin" not in tok.vocab
    text = "chiptune in f# major at 151 bpm: very fast, with a square-wave arpeggio."
    words = WordTokenizer([text])
    assert words.decode(words.encode(text)) == text


def test_collate_masks_label_padding_and_frames():
    feats = [np.ones((1, 2, 4), np.float32), np.ones((1, 5, 4), np.float32)]
    batch = collate(feats, [[5, 6, 1], [7, 1]])
    assert batch["feats"].shape == (2, 1, 5, 4)
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[5, 6, 1], [7, 1, IGNORE_INDEX]]
    assert float(batch["feats"][0, 0, 2:].abs().sum()) == 0.0


def test_scratch_captioner_beats_constant_caption(scratch_run):
    ctx, ev = scratch_run
    assert ev.details["layer"] == 1  # the auto proxy finds the informative layer
    assert ev.scores["bleu4"][0] > ev.baselines["constant-caption"] + 20
    assert FLAG_NOT_BEATING_CONSTANT not in ev.flags
    assert set(ev.baselines) == {"constant-caption", "nearest-neighbour"}
    assert ev.details["constant_caption"] in CAPTIONS
    assert {"bleu1", "bleu4", "rouge_l", "wer", "distinct_ratio", "mean_length"} <= set(ev.scores)
    assert all(len(v) == 1 for v in ev.scores.values())
    assert "tok:13a" in ev.details["bleu_signature"] and "case:lc" in ev.details["bleu_signature"]
    items = ev.item_scores  # each test clip's BLEU-4 n-gram counts: the Δ column pairs on them
    assert items.metric == "bleu4" and items.aggregate == "bleu"
    assert len(items.clip_ids) == ev.details["n_clips"]["test"]
    assert items.problems([0], ev.scores) == []


def test_test_captions_written_as_jsonl(scratch_run):
    ctx, _ = scratch_run
    rows = [json.loads(line) for line in
            (Path(ctx.output_dir) / "captions-seed0.jsonl").read_text().splitlines()]
    test_ids = [c.id for c in ctx.clips.split("test")]
    assert [r["clip_id"] for r in rows] == test_ids
    assert {r["reference"] for r in rows} <= set(CAPTIONS)
    assert all(isinstance(r["hypothesis"], str) for r in rows)


def test_selection_uses_validation_only(problem, scratch_run, tmp_path):
    """Permuting the test references moves the test scores but not the chosen epoch/layer."""
    clips, features = problem
    _, ev = scratch_run
    test_targets = [c.target for c in clips.split("test")]
    shifted = iter(test_targets[1:] + test_targets[:1])  # each clip gets the next one's caption
    permuted = ClipSet(dataset_id=clips.dataset_id, split_id=clips.split_id, clips=[
        replace(c, target=next(shifted)) if c.split == "test" else c for c in clips])
    ev2 = evaluate_captioning(make_context(permuted, features, tmp_path, seeds=[0]), **FAST)
    assert ev2.details["seeds"][0]["epoch"] == ev.details["seeds"][0]["epoch"]
    assert ev2.details["seeds"][0]["valid_loss"] == ev.details["seeds"][0]["valid_loss"]
    assert ev2.details["layer"] == ev.details["layer"]
    assert ev2.scores["bleu4"][0] < ev.scores["bleu4"][0]


def test_t5_small_offline_error(problem, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    clips, features = problem
    with pytest.raises(MissingWeightsError) as err:
        evaluate_captioning(make_context(clips, features, tmp_path), captioner="t5-small")
    message = str(err.value)
    for needle in ("t5-small", "HF_HOME", "HF_HUB_OFFLINE", "hf download t5-small"):
        assert needle in message


def save_tiny_t5(folder: Path) -> Path:
    """A tiny T5 + word-level tokenizer saved with save_pretrained: t5-small's stand-in."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    words = sorted({w for c in CAPTIONS for w in c.split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                  eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, num_layers=1,
                      num_decoder_layers=1, num_heads=4, d_ff=64, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_local_pretrained_folder_code_path(problem, tmp_path):
    """A tiny T5 + tokenizer saved with save_pretrained stands in for t5-small offline."""
    folder = save_tiny_t5(tmp_path / "tiny-t5")
    clips, features = problem
    ctx = make_context(clips, features, tmp_path, seeds=[0, 1])
    ev = evaluate_captioning(ctx, captioner=str(folder), layer=1, epochs=2, num_beams=1,
                             max_new_tokens=8)
    assert all(len(v) == 2 for v in ev.scores.values())
    assert (Path(ctx.output_dir) / "captions-seed1.jsonl").is_file()


def test_the_users_captioner_overrides_the_tasks_default(problem, tmp_path, monkeypatch):
    """``embench run --captioner`` reaches the protocol as ``ctx.captioner``: the task's default
    (t5-small, absent offline) is not even looked up."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    folder = save_tiny_t5(tmp_path / "tiny-t5")
    clips, features = problem
    ctx = replace(make_context(clips, features, tmp_path), captioner=str(folder))
    ev = evaluate_captioning(ctx, captioner="t5-small", layer=1, epochs=1, num_beams=1,
                             max_new_tokens=8)
    assert ev.details["captioner"] == str(folder)
    assert ev.details["captioner_revision"] is None  # a folder has no hub commit


def test_a_hub_captioner_is_recorded_with_its_commit(problem, tmp_path, hf_hub):
    """A captioner named by hub id is read from its cached snapshot; the result says which."""
    commit = "c" * 40
    save_tiny_t5(snapshot_folder(hf_hub, "t5-small", commit))
    clips, features = problem
    ev = evaluate_captioning(make_context(clips, features, tmp_path, seeds=[0]),
                             captioner="t5-small", layer=1, epochs=1, num_beams=1,
                             max_new_tokens=8)
    assert (ev.details["captioner"], ev.details["captioner_revision"]) == ("t5-small", commit)


def test_a_captioner_written_as_a_path_must_be_a_folder(tmp_path):
    from embench.caption_model import local_captioner
    from embench.errors import EmbenchError

    assert local_captioner("t5-small") is None and local_captioner("scratch") is None
    assert local_captioner(str(tmp_path)) == tmp_path
    with pytest.raises(EmbenchError, match="does not exist"):
        local_captioner(str(tmp_path / "missing"))


def test_beam_search_and_validation_loss_do_not_depend_on_the_batch():
    """The protocol decodes and scores validation at ``eval_batch_size``, not the training
    batch: equal captions and loss for any batching, with clips of different lengths (masked
    padding) in one batch."""
    from transformers import T5Config, T5ForConditionalGeneration

    from embench.caption_model import SCRATCH_CONFIG, AudioCaptioner

    tok = WordTokenizer(list(CAPTIONS))
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tok), pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0, initializer_factor=5.0, **SCRATCH_CONFIG)
    # large initial weights: untrained, yet its captions depend on the frames
    model = AudioCaptioner(T5ForConditionalGeneration(config), 1, 16).eval()
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((1, int(n), 16)).astype(np.float32)
             for n in rng.integers(2, 9, size=11)]
    labels = [tok.encode(CAPTIONS[i % 3]) for i in range(11)]
    cpu = torch.device("cpu")
    one = captioning.decode(model, tok, feats, 1, 3, 10, cpu)
    assert len(set(one)) > 5  # the frames matter, so a batch effect would show
    assert captioning.decode(model, tok, feats, 4, 3, 10, cpu) == one
    assert captioning.decode(model, tok, feats, 64, 3, 10, cpu) == one
    loss = captioning._valid_loss(model, feats, labels, 1, cpu)
    assert captioning._valid_loss(model, feats, labels, 64, cpu) == pytest.approx(loss, rel=1e-5)


def test_mix_layer_option_and_meteor_skip_note(problem, tmp_path, monkeypatch):
    """Without WordNet every seed and baseline drops METEOR alike and details say why."""
    monkeypatch.setattr(captioning, "wordnet_note", lambda: "METEOR skipped: no WordNet")
    clips, features = problem
    ev = evaluate_captioning(make_context(clips, features, tmp_path), captioner="scratch",
                             layer="mix", epochs=1, num_beams=1, max_new_tokens=8)
    weights = ev.details["seeds"][0]["layer_weights"]
    assert ev.details["layer"] == "mix" and len(weights) == 2
    assert abs(sum(weights) - 1.0) < 1e-5
    assert "meteor" not in ev.scores and ev.details["meteor"].startswith("METEOR skipped")
    assert "meteor" not in ev.details["baseline_metrics"]["constant-caption"]
