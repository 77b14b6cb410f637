"""The ``finetune`` protocol on a tiny random-weight MERT and three classes of generated tones:
it learns an easy task, chooses its epoch on validation only, decodes test once per seed, is
deterministic per seed, refuses weight-free encoders, and runs end to end through the CLI."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import HubertConfig

from embench import (
    Clip,
    ClipSet,
    EmbenchError,
    EvalContext,
    Evaluation,
    Task,
    TaskInfo,
    finetune,
    hookimpl,
    plugins,
)
from embench_plugins.melspec import MelSpec
from embench_plugins.mert import MertEncoder
from tests.helpers_cli import run_main

SR = 24_000
CPU = torch.device("cpu")
# mask_time_length 2 (default 10): SpecAugment then masks about as much of an 18-frame crop as
# the default masks of MERT's 375-frame 5 s crop, instead of over half of it.
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
            mask_time_length=2)
LABELS = ("tone", "noise", "clicks")
SETTINGS = dict(epochs=4, lr_encoder=1e-3, lr_head=1e-1, batch_size=2, crop_s=0.25, patience=3)


@contextmanager
def one_thread() -> Iterator[None]:
    """On a busy CPU, torch's second OpenMP thread spins and waits for cores: measured 1.0 s
    with one thread vs 12-56 s with two for the same two-seed run here. Tests only."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def write_tones(root: Path) -> list[Clip]:
    """Three timbres (a low tone, white noise, a 25 Hz click train), per class 4 train / 2 valid
    / 2 test clips of 0.5-0.7 s at 24 kHz, plus one broken train file."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    clips = []
    for label in LABELS:
        for i in range(8):
            n = int((0.5 + 0.05 * (i % 5)) * SR)
            if label == "tone":
                audio = np.sin(2 * np.pi * 220 * (1 + 0.1 * rng.random()) * np.arange(n) / SR)
            elif label == "noise":
                audio = rng.standard_normal(n)
            else:
                audio = np.zeros(n)
                audio[rng.integers(0, 960)::960] = 1.0
            path = root / f"{label}{i}.wav"
            sf.write(path, (0.3 * audio).astype(np.float32), SR)
            split = "train" if i < 4 else "valid" if i < 6 else "test"
            clips.append(Clip(f"{label}{i}", path, label, split))
    bad = root / "broken.wav"
    bad.write_bytes(b"not audio")
    clips.append(Clip("broken", bad, "tone", "train"))
    return clips


def tiny_mert() -> MertEncoder:
    return MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))


def context(clips: list[Clip], seeds: list[int], tmp: Path, encoder=None,
            log=lambda _: None) -> EvalContext:
    return EvalContext(clips=ClipSet("test/tones3", "fixed", clips, labels=LABELS),
                       protocol="finetune", seeds=seeds, device=CPU, output_dir=tmp,
                       encoder=encoder or tiny_mert(), weights="random", log=log)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> list[Clip]:
    return write_tones(tmp_path_factory.mktemp("tones"))


@pytest.fixture(scope="module")
def first(tones, tmp_path_factory) -> tuple[Evaluation, Counter, MertEncoder, list[str]]:
    """Seeds 1 and 2, counting every decode per file and keeping the log."""
    decoded: Counter = Counter()
    logs: list[str] = []
    real = finetune.load_audio

    def spy(source, *args, **kwargs):
        decoded[Path(source).stem] += 1
        return real(source, *args, **kwargs)

    encoder = tiny_mert()
    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setattr(finetune, "load_audio", spy)
        torch_rng, numpy_rng = torch.get_rng_state(), np.random.get_state()[1].copy()
        result = finetune.finetune_classification(
            context(tones, [1, 2], tmp_path_factory.mktemp("out"), encoder, logs.append),
            **SETTINGS)
    # the caller's RNGs are left as they were
    assert torch.equal(torch_rng, torch.get_rng_state())
    assert np.array_equal(numpy_rng, np.random.get_state()[1])
    return result, decoded, encoder, logs


def test_learns_an_easy_task_and_reports_like_the_probe(first) -> None:
    result, _, encoder, logs = first
    assert set(result.scores) == {"accuracy", "macro_f1"}
    assert [len(v) for v in result.scores.values()] == [2, 2]
    assert result.baselines == pytest.approx({"chance": 100 / 3, "majority": 100 / 3})
    assert all(acc > 50.0 for acc in result.scores["accuracy"]), result.scores
    assert all(acc > 50.0 for acc in result.train_scores["accuracy"]), result.train_scores
    details = result.details
    assert details["protocol"] == "finetune" and details["labels"] == list(LABELS)
    assert details["n_clips"] == {"train": 12, "valid": 6, "test": 6}
    ((skipped, reason),) = [(s["clip_id"], s["reason"]) for s in details["skipped"]]
    assert skipped == "broken" and reason
    assert details["hyperparameters"]["crop_s"] == 0.25
    improved = False
    for seed, entry in zip((1, 2), details["seeds"], strict=True):
        assert entry["seed"] == seed
        curve = entry["curve"]
        accuracy = [c["valid_accuracy"] for c in curve]
        improved |= max(accuracy) > accuracy[0]
        best = min((c for c in curve if c["valid_accuracy"] == max(accuracy)),
                   key=lambda c: c["valid_loss"])  # ties: lower validation loss
        assert entry["best_epoch"] == best["epoch"]
        assert entry["valid_accuracy"] == max(accuracy)
        assert entry["epochs_run"] == len(curve) <= SETTINGS["epochs"]
        assert np.sum(entry["confusion_matrix"]) == 6
        assert sum(entry["layer_weights"]) == pytest.approx(1.0)
        assert len(entry["layer_weights"]) == 3  # CNN output + 2 transformer layers
    assert improved  # validation accuracy rose during training for some seed
    items = result.item_scores  # the 6 decodable test clips, per seed
    assert len(items.clip_ids) == 6 and "broken" not in items.clip_ids
    assert items.problems([1, 2], result.scores) == []
    assert len(logs) == sum(e["epochs_run"] for e in details["seeds"])  # one line per epoch
    assert logs[0].startswith("finetune seed 1 epoch 1/4: train loss")
    assert not encoder.loaded  # fine-tuned weights never outlive the protocol


def test_test_clips_are_decoded_once_per_seed(first, tones) -> None:
    result, decoded, _, _ = first
    epochs = sum(s["epochs_run"] for s in result.details["seeds"])
    # test: once per seed, after selection; valid: every epoch; train: every epoch + accuracy
    expected = {"test": 2, "valid": epochs, "train": epochs + 2}
    assert {c.id: decoded[c.id] for c in tones} == {c.id: expected[c.split] for c in tones}


def test_selection_never_sees_test_targets_and_seeds_reproduce(first, tones, tmp_path) -> None:
    """Seed 1 alone, with every test target shifted to the next class: the same training and
    selection (bit for bit), the same test predictions, only scored against other targets."""
    shifted = [replace(c, target=LABELS[(LABELS.index(c.target) + 1) % 3]) if c.split == "test"
               else c for c in tones]
    again = finetune.finetune_classification(context(shifted, [1], tmp_path), **SETTINGS)
    ours, theirs = first[0].details["seeds"][0], again.details["seeds"][0]
    for key in ("best_epoch", "curve", "layer_weights"):
        assert theirs[key] == ours[key], key
    # predictions unchanged: confusion rows move with the shifted targets
    assert theirs["confusion_matrix"] == np.roll(ours["confusion_matrix"], 1, axis=0).tolist()
    assert again.train_scores["accuracy"][0] == first[0].train_scores["accuracy"][0]


def test_weight_free_encoder_is_refused_before_loading(tones, tmp_path) -> None:
    melspec = MelSpec()
    with pytest.raises(EmbenchError, match=r"melspec.*frozen protocols .*embench list"):
        finetune.finetune_classification(context(tones, [1], tmp_path, melspec))
    assert not melspec.loaded


def test_class_without_training_clips_is_refused(tones, tmp_path) -> None:
    clips = [c for c in tones if not (c.target == "clicks" and c.split == "train")]
    with pytest.raises(EmbenchError, match="'clicks'.*no training clips"):
        finetune.finetune_classification(context(clips, [1], tmp_path))


class _FinetuneTones(Task):
    info = TaskInfo(name="tones-ft", dataset_id="test/tones3", main_score="accuracy",
                    protocols=("finetune",), description="fine-tuning test task")

    def load(self, data_dir: Path) -> ClipSet:
        return ClipSet("test/tones3", "fixed", write_tones(Path(data_dir) / "tones3"),
                       labels=LABELS)

    def evaluate(self, ctx: EvalContext) -> Evaluation:
        # crop_s None: MERT's 5 s window, longer than every clip, so whole clips are used
        return finetune.finetune_classification(ctx, **{**SETTINGS, "epochs": 2, "crop_s": None})


class _Plugin:
    @hookimpl
    def register_encoders(self, register) -> None:
        register(tiny_mert())

    @hookimpl
    def register_tasks(self, register) -> None:
        register(_FinetuneTones())


def test_cli_end_to_end(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "")  # only the plugin below
    plugins.register_plugin(_Plugin(), name="finetune-test")
    out = tmp_path / "out"
    with one_thread():
        code = run_main(["run", "-e", "mert-v1-95m", "-t", "tones-ft", "-p", "finetune",
                         "--weights", "random", "--seeds", "1", "--device", "cpu",
                         "--no-progress", "-o", str(out)])
    assert code == 0
    (result,) = json.loads(next(out.glob("run-*.json")).read_text())["results"]
    assert (result["protocol"], result["weights"], result["task"]) == (
        "finetune", "random", "tones-ft")
    assert len(result["scores"]["accuracy"]) == 1
    assert result["details"]["seeds"][0]["epochs_run"] == 2
    assert result["details"]["hyperparameters"]["crop_s"] == 5.0
    assert result["details"]["skipped"][0]["clip_id"] == "broken"
    assert [s["clip_id"] for s in result["skipped"]] == ["broken"]  # the result's own record
    assert "broken" not in json.dumps(result["n_clips"]) and sum(result["n_clips"].values()) > 0
