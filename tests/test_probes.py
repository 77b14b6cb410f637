"""The shared classification probe: layer selection, determinism, test isolation, baselines."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from embench.classification import classification_baselines, evaluate_classification
from embench.errors import EmbenchError
from embench.linear_probe import fit_linear_probe
from embench.probes import WEIGHTED_SUM, MLPConfig, _Stack, fit_mlp_probe
from embench.task import Clip, ClipSet
from tests.helpers_features import (
    build_features,
    features_from_means,
    make_context,
    synthetic_classification,
)


def _context(tmp_path, clips, means, seeds=(0,), ids=None, **kwargs):
    ids = [c.id for c in clips] if ids is None else ids
    rows = {c.id: i for i, c in enumerate(clips)}
    selected = [m[[rows[i] for i in ids]] for m in means]
    features = features_from_means(tmp_path / "cache", ids, selected, **kwargs)
    return make_context(clips, features, tmp_path, seeds=seeds)


def _selection(evaluation):
    keep = ("layer", "lr", "C", "epoch", "valid_accuracy", "valid_accuracy_by_layer",
            "valid_accuracy_weighted_sum", "layer_weights")
    return [{k: s.get(k) for k in keep} for s in evaluation.details["seeds"]]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny, so threads gain nothing; and when other processes keep the cores
    busy, spinning OpenMP threads slow tiny ops down 10-100x. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# properties that do not depend on the hyper-parameters are checked with a cheaper probe
FAST = MLPConfig(hidden=64, max_epochs=40, patience=5, lrs=(1e-3, 1e-2))


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """One synthetic task (signal only in layer 2) and its default MLP evaluation."""
    tmp = tmp_path_factory.mktemp("probe")
    clips, means = synthetic_classification(num_layers=4, dim=16, signal_layer=2)
    ctx = _context(tmp, clips, means, seeds=(0, 1))
    messages: list[str] = []
    ctx.log = messages.append
    return clips, means, evaluate_classification(ctx), messages


@pytest.fixture(scope="module")
def fast_eval(tmp_path_factory, task):
    clips, means, _, _ = task
    ctx = _context(tmp_path_factory.mktemp("fast"), clips, means, seeds=(0, 1))
    return evaluate_classification(ctx, mlp_config=FAST)


def test_mlp_picks_the_informative_layer(task):
    _, _, ev, messages = task
    for seed_details in ev.details["seeds"]:
        assert seed_details["layer"] == 2
        curve = seed_details["valid_accuracy_by_layer"]
        assert len(curve) == 4 and max(curve) == curve[2]
        assert seed_details["valid_accuracy_weighted_sum"] is not None
        assert seed_details["lr"] in MLPConfig().lrs and 1 <= seed_details["epoch"] <= 100
    assert min(ev.scores["accuracy"]) > 90 and min(ev.scores["macro_f1"]) > 90
    assert len(ev.scores["accuracy"]) == len(ev.train_scores["accuracy"]) == 2
    assert len(messages) == 2 and "seed 0" in messages[0]


def test_details_are_json_and_consistent(task):
    _, _, ev, _ = task
    details = json.loads(json.dumps(ev.details))
    assert details["labels"] == ["class0", "class1", "class2"]
    assert details["n_clips"] == {"train": 60, "valid": 30, "test": 30}
    for seed_details, acc in zip(details["seeds"], ev.scores["accuracy"], strict=True):
        cm = np.array(seed_details["confusion_matrix"])
        assert cm.shape == (3, 3) and cm.sum() == 30
        assert np.trace(cm) / 30 * 100 == pytest.approx(acc)
    ci = details["test_accuracy_bootstrap_ci95"]
    assert ci["low"] <= ev.scores["accuracy"][0] <= ci["high"]
    assert ev.baselines["chance"] == pytest.approx(100 / 3)
    items = ev.item_scores  # each test clip's accuracy per seed: the Δ column pairs on these
    assert items.metric == "accuracy" and len(items.clip_ids) == 30
    assert {v for row in items.values for v in row} <= {0.0, 100.0}
    assert items.problems([0, 1], ev.scores) == []


def test_same_seed_same_result(tmp_path, task, fast_eval):
    clips, means, _, _ = task
    ev = fast_eval
    again = evaluate_classification(_context(tmp_path, clips, means, seeds=(0, 1)),
                                    mlp_config=FAST)
    assert again.scores == ev.scores
    assert again.train_scores == ev.train_scores
    assert again.details == ev.details


def test_test_labels_cannot_change_model_selection(tmp_path, task, fast_eval):
    clips, means, _, _ = task
    ev = fast_eval
    rng = np.random.default_rng(1)
    test_targets = [c.target for c in clips if c.split == "test"]
    shuffled = iter(rng.permutation(test_targets).tolist())
    permuted = ClipSet(
        dataset_id=clips.dataset_id, split_id=clips.split_id, labels=clips.labels,
        clips=[replace(c, target=next(shuffled)) if c.split == "test" else c for c in clips],
    )
    other = evaluate_classification(_context(tmp_path, permuted, means, seeds=(0, 1)),
                                    mlp_config=FAST)
    assert _selection(other) == _selection(ev)
    assert other.train_scores == ev.train_scores
    assert other.scores["accuracy"] != ev.scores["accuracy"]  # only the test score moves


def test_linear_probe(tmp_path, task):
    clips, means, _, _ = task
    ev = evaluate_classification(_context(tmp_path, clips, means, seeds=(0, 1)), kind="linear",
                                 cs=(0.1, 1.0))
    for seed_details in ev.details["seeds"]:
        assert seed_details["layer"] == 2 and seed_details["C"] in (0.1, 1.0)
        assert seed_details["epoch"] is None and seed_details["valid_accuracy_weighted_sum"] is None
    assert min(ev.scores["accuracy"]) > 90
    assert ev.scores["accuracy"][0] == ev.scores["accuracy"][1]  # lbfgs is deterministic


def test_probe_functions_directly_pick_signal_layer():
    clips, means = synthetic_classification(num_layers=3, dim=8, signal_layer=0, seed=3)
    y = np.array([int(c.target[-1]) for c in clips])
    tr = np.array([c.split == "train" for c in clips])
    va = np.array([c.split == "valid" for c in clips])
    args = ([m[tr] for m in means], y[tr], [m[va] for m in means], y[va], 3, 0)
    mlp = fit_mlp_probe(*args, config=MLPConfig(hidden=32, lrs=(1e-3,)))
    linear = fit_linear_probe(*args)
    assert mlp.layer == 0 and linear.layer == 0
    assert len(mlp.candidates) == 4  # three layers + weighted sum, one lr
    assert mlp.predict(means).shape == (len(clips),)


def test_weighted_sum_wins_when_layers_must_be_combined():
    """Layer 0 is signal plus strong noise, layer 1 the same noise negated: only their sum is
    clean, so the learned weighted sum must beat every single layer."""
    clips, means = synthetic_classification(num_layers=2, dim=8, signal_layer=0, signal=2.0)
    noise = np.random.default_rng(5).normal(scale=4.0, size=means[0].shape).astype(np.float32)
    means[0] += noise
    means[1] = -noise + 0.1 * means[1]
    y = np.array([int(c.target[-1]) for c in clips])
    tr = np.array([c.split == "train" for c in clips])
    va = np.array([c.split == "valid" for c in clips])
    args = ([m[tr] for m in means], y[tr], [m[va] for m in means], y[va], 3, 0)
    probe = fit_mlp_probe(*args, config=FAST)
    singles, weighted = probe.layer_curve()
    assert probe.layer == WEIGHTED_SUM and weighted is not None and weighted > max(singles)
    assert len(probe.layer_weights) == 2 and sum(probe.layer_weights) == pytest.approx(1.0)
    test = np.array([c.split == "test" for c in clips])
    assert (probe.predict([m[test] for m in means]) == y[test]).mean() > 0.8


def test_layers_of_different_widths_skip_weighted_sum(tmp_path):
    rng = np.random.default_rng(0)
    clips, _ = synthetic_classification(signal_layer=None)
    per_clip = {c.id: [rng.normal(size=(2, d)).astype(np.float32) for d in (4, 6, 4)]
                for c in clips}
    features = build_features(tmp_path / "cache", per_clip)
    assert features.dims == (4, 6, 4)
    ev = evaluate_classification(make_context(clips, features, tmp_path),
                                 mlp_config=MLPConfig(hidden=16, max_epochs=5))
    details = ev.details["seeds"][0]
    assert details["valid_accuracy_weighted_sum"] is None
    assert len(details["valid_accuracy_by_layer"]) == 3


def test_only_cached_clips_take_part(tmp_path):
    clips, means = synthetic_classification()
    ids = [c.id for i, c in enumerate(clips) if i % 5 != 0]  # every fifth clip was skipped
    ev = evaluate_classification(_context(tmp_path, clips, means, ids=ids), kind="linear")
    assert ev.details["n_clips"] == {"train": 48, "valid": 24, "test": 24}
    tested = {c.id for c in clips if c.split == "test"} & set(ids)
    assert sorted(ev.item_scores.clip_ids) == sorted(tested)


def test_stacked_training_equals_independent_training():
    """Candidates trained in one stack get the same updates as when trained alone."""
    torch.manual_seed(0)
    x, y = torch.randn(3, 20, 5), torch.randint(0, 2, (20,))
    cfg = MLPConfig(hidden=7, dropout=0.0)
    stack = _Stack([0, 1, 2], 5, 2, 1e-2, cfg, torch.Generator().manual_seed(0))
    alone = []
    for c in range(3):
        single = _Stack([c], 5, 2, 1e-2, cfg, torch.Generator().manual_seed(1))
        with torch.no_grad():
            for k in ("w1", "b1", "w2", "b2"):
                single.p[k].copy_(stack.p[k][c:c + 1])
        alone.append(single)
    for _ in range(5):
        stack.step(x, y, None)
        for c, single in enumerate(alone):
            single.step(x[c:c + 1], y, None)
    stack.keep([0, 2])  # dropping a candidate keeps the others' weights and Adam state
    stack.step(x[[0, 2]], y, None)
    for c in (0, 2):
        alone[c].step(x[c:c + 1], y, None)
    for pos, c in enumerate((0, 2)):
        for k in ("w1", "b1", "w2", "b2"):
            torch.testing.assert_close(stack.p[k][pos], alone[c].p[k][0])


def test_baselines_hand_made():
    # train: a a a b c -> majority "a"; test: a b b c -> majority accuracy 1/4
    base = classification_baselines(np.array([0, 0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    assert base == {"chance": pytest.approx(100 / 3), "majority": 25.0}
    tie = classification_baselines(np.array([1, 1, 0, 0]), np.array([0, 1]), 2)
    assert tie["majority"] == 50.0 and tie["chance"] == 50.0


def test_baselines_in_evaluation(tmp_path):
    labels = ("a", "b", "c")
    layout = {"train": "aaabcc", "valid": "abc", "test": "abbc"}
    clips = ClipSet("hand", "hand-v1", labels=labels, clips=[
        Clip(id=f"{s}{i}", source=b"", target=t, split=s)
        for s, targets in layout.items() for i, t in enumerate(targets)
    ])
    means = [np.random.default_rng(0).normal(size=(len(clips), 3)).astype(np.float32)]
    ev = evaluate_classification(_context(tmp_path, clips, means), kind="linear")
    assert ev.baselines == {"chance": pytest.approx(100 / 3), "majority": 25.0}


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_empty_split_is_an_error(tmp_path, split):
    clips, means = synthetic_classification()
    ids = [c.id for c in clips if c.split != split]
    with pytest.raises(EmbenchError, match=f"'{split}' split has no clips"):
        evaluate_classification(_context(tmp_path, clips, means, ids=ids))


def test_class_without_training_clips_is_an_error(tmp_path):
    clips, means = synthetic_classification()
    ids = [c.id for c in clips if not (c.split == "train" and c.target == "class1")]
    with pytest.raises(EmbenchError, match="class1"):
        evaluate_classification(_context(tmp_path, clips, means, ids=ids))


def test_missing_features_and_bad_kind_are_errors(tmp_path):
    clips, _ = synthetic_classification()
    with pytest.raises(EmbenchError, match="cached features"):
        evaluate_classification(make_context(clips, None, tmp_path))
    with pytest.raises(EmbenchError, match="Unknown probe"):
        evaluate_classification(make_context(clips, None, tmp_path), kind="svm")


def _chunky_dataset(tmp_path, seed: int = 0):
    """3 classes, 30 one-second frames per clip; the class shows in frame means of layer 2."""
    from embench import Clip, ClipSet
    from tests.helpers_features import build_features

    rng = np.random.default_rng(seed)
    clips, per_clip = [], {}
    for i in range(90):
        y = i % 3
        split = ("train", "train", "train", "valid", "test")[(i // 3) % 5]
        clips.append(Clip(f"c{i}", tmp_path / "x.wav", f"k{y}", split))
        per_clip[f"c{i}"] = [(np.eye(16)[y] * (layer == 2) + rng.standard_normal((30, 16)) * 1.5
                              ).astype(np.float32) for layer in range(3)]
    clipset = ClipSet("syn", "s", clips, labels=("k0", "k1", "k2"))
    return clipset, build_features(tmp_path / "cache", per_clip, duration_s=30.0)


def test_chunk_level_training_is_selected_on_validation_only(tmp_path):
    from dataclasses import replace as dc_replace

    from embench.classification import evaluate_classification
    from tests.helpers_features import make_context

    clips, feats = _chunky_dataset(tmp_path)
    ctx = make_context(clips, feats, tmp_path, seeds=(0,))
    chunked = evaluate_classification(ctx, chunk_s=5.0)
    seed = chunked.details["seeds"][0]
    assert seed["layer"] == 2 and seed["chunk_s"] == 5.0 and seed["selection_epoch"] >= 1
    assert chunked.scores["accuracy"][0] > 80
    # permuting test targets changes nothing that was selected
    shuffled = [dc_replace(c, target=f"k{(int(c.target[1]) + 1) % 3}") if c.split == "test"
                else c for c in clips]
    ctx2 = make_context(dc_replace(clips, clips=shuffled), feats, tmp_path, seeds=(0,))
    again = evaluate_classification(ctx2, chunk_s=5.0).details["seeds"][0]
    for key in ("layer", "lr", "epoch", "selection_epoch", "chunk_valid_accuracy"):
        assert again[key] == seed[key]


def test_group_predictions_average_row_probabilities():
    from embench.probe_base import group_mean

    rows = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    np.testing.assert_allclose(group_mean(rows, np.array([0, 0, 1, 1])),
                               [[0.55, 0.45], [0.55, 0.45]])


def test_successive_halving_keeps_the_best_layers_training(tmp_path):
    clips, feats = _chunky_dataset(tmp_path)
    layers = feats.all_clip_means()
    ids = feats.clip_ids
    split = np.array([c.split for c in clips])
    y = np.array([int(c.target[1]) for c in clips])
    tr, va = split == "train", split == "valid"
    args = ([x[tr] for x in layers], y[tr], [x[va] for x in layers], y[va], 3, 0)
    cfg = MLPConfig(hidden=32, lrs=(1e-3,), prune_after=2, keep_top=1, weighted_sum=False)
    pruned = fit_mlp_probe(*args, cfg)
    assert len(ids) == 90 and len(pruned.layer_curve()[0]) == 3
    late = [c.layer for c in pruned.candidates if c.epoch > 2]
    assert len(late) <= 1  # only the best layer after epoch 2 trained on
    unpruned = fit_mlp_probe(*args, dataclasses.replace(cfg, prune_after=None))
    assert sum(c.epoch > 2 for c in unpruned.candidates) > len(late)
