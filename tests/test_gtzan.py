"""The GTZAN task plugin: layouts, the three split protocols, missing and corrupt clips,
cross-validation, protocol dispatch, and end-to-end runs on generated GTZAN-shaped data."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from embench import ClipSet, EmbenchError, Evaluation, MissingDataError, Task, load_audio, plugins
from embench_tasks import gtzan, gtzan_splits
from tests import gtzan_fixture as fx
from tests.helpers_cli import run_main
from tests.helpers_features import features_from_means, make_context

TASKS = {"gtzan": gtzan.GtzanFaultFiltered, "gtzan-10fold": gtzan.GtzanTenFold,
         "gtzan-random-80-20": gtzan.GtzanRandom8020}


@pytest.fixture(scope="module")
def full_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 1000 clips in the original layout under ``<data dir>/gtzan``; returns the data dir."""
    data_dir = tmp_path_factory.mktemp("gtzan-full")
    fx.write_folder(data_dir / "gtzan", fx.all_names())
    return data_dir


@pytest.fixture
def one_thread():
    """Probes on a few hundred 8-d vectors are far faster on one thread; on a busy machine torch's
    OpenMP pool can spin and take 10x longer."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rows(clips: ClipSet) -> list[tuple[str, str, str]]:
    return [(c.id, c.target, c.split) for c in clips]


def _class_means(clips: ClipSet, seed: int = 0) -> list[np.ndarray]:
    """Per-layer clip means: layer 1 separates the genres, layer 0 is noise."""
    rng = np.random.default_rng(seed)
    y = np.array([fx.GENRES.index(c.target) for c in clips])
    centroids = rng.normal(size=(len(fx.GENRES), 8)).astype(np.float32) * 2
    noise = [rng.normal(size=(len(y), 8)).astype(np.float32) for _ in range(2)]
    return [noise[0], noise[1] + centroids[y]]


# -- splits ------------------------------------------------------------------------------------
def test_shipped_lists_are_the_fault_filtered_split() -> None:
    listed = gtzan_splits.fault_filtered()
    assert Counter(split for _, split in listed.values()) == {"train": 443, "valid": 197,
                                                              "test": 290}
    assert set(listed) <= set(gtzan_splits.canonical_clips())
    assert listed["jazz.00054"] == ("jazz", "train")
    assert {cid: split for cid, (_, split) in listed.items()} == fx.listed_names()


def test_full_copy_loads_every_split(full_copy: Path) -> None:
    expected = {"gtzan": ("gtzan-fault-filtered", {"train": 443, "valid": 197, "test": 290}),
                "gtzan-10fold": ("gtzan-10fold-seed0", {"train": 800, "valid": 100, "test": 100}),
                "gtzan-random-80-20": ("gtzan-random-80-20-seed0",
                                       {"train": 700, "valid": 100, "test": 200})}
    for name, (split_id, counts) in expected.items():
        clips = TASKS[name]().load(full_copy)
        assert (clips.split_id, clips.counts(), clips.missing) == (split_id, counts, [])
        assert clips.dataset_id == "gtzan" and clips.labels == fx.GENRES
        assert all(c.target == fx.genre_of(c.id) and isinstance(c.source, Path) for c in clips)
    corrupt = {c.id: c for c in TASKS["gtzan"]().load(full_copy)}[fx.CORRUPT]
    assert corrupt.split == "train" and corrupt.source.read_bytes() == fx.CORRUPT_BYTES


def test_ten_folds_are_stratified_disjoint_covering_and_fixed() -> None:
    names = gtzan_splits.canonical_clips()
    folds = gtzan_splits.fold_assignment(names, 10, seed=0)
    assert set(folds) == set(names) and set(folds.values()) == set(range(10))
    per_fold_genre = Counter((fold, names[cid]) for cid, fold in folds.items())
    assert set(per_fold_genre.values()) == {10}  # 10 clips of every genre in every fold
    assert folds == gtzan_splits.fold_assignment(dict(reversed(names.items())), 10, seed=0)
    assert folds != gtzan_splits.fold_assignment(names, 10, seed=1)
    roles = Counter((cid, gtzan_splits.fold_split(folds[cid], k, 10))
                    for cid in names for k in range(10))
    assert {roles[(cid, "test")] for cid in names} == {1}  # each clip is test exactly once
    assert {roles[(cid, "valid")] for cid in names} == {1}
    # uneven genres: sizes still differ by at most one, and one genre's gap moves no other genre
    fewer = {cid: g for cid, g in names.items() if cid not in ("pop.00003", "pop.00071")}
    uneven = gtzan_splits.fold_assignment(fewer, 10, seed=0)
    sizes = Counter(uneven.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1
    assert all(uneven[c] == folds[c] for c in fewer if names[c] != "pop")


def test_random_80_20_is_stratified_and_seeded() -> None:
    names = gtzan_splits.canonical_clips()
    split = gtzan_splits.random_split(names, seed=0)
    per_genre = Counter((names[cid], s) for cid, s in split.items())
    assert all(per_genre[(g, "train")] == 70 and per_genre[(g, "valid")] == 10
               and per_genre[(g, "test")] == 20 for g in fx.GENRES)
    assert split == gtzan_splits.random_split(dict(sorted(names.items(), reverse=True)), seed=0)
    assert split != gtzan_splits.random_split(names, seed=1)


# -- layouts and missing data ------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["kaggle", "kaggle-bare", "genre-folders", "parquet-genre",
                                    "parquet-label-metadata", "parquet-label-alphabetical",
                                    "data-dir-is-root"])
def test_layouts_load_the_same_clips(layout: str, tmp_path: Path) -> None:
    names = fx.stratified_subset(fx.all_names(), 3) + [fx.CORRUPT]
    reference = gtzan.GtzanRandom8020().load(fx.write_folder(tmp_path / "ref" / "gtzan", names)
                                             .parent)
    data_dir = tmp_path / "copy"
    if layout.startswith("parquet"):
        label = "genre" if layout == "parquet-genre" else "label"
        fx.write_parquet(data_dir / "gtzan" / "data" / "train.parquet", names, label=label,
                         class_label_metadata=layout.endswith("metadata"), files=2)
    elif layout == "data-dir-is-root":
        fx.write_folder(data_dir, names)  # <data_dir>/genres/...: no gtzan/ level
    else:
        fx.write_folder(data_dir / "gtzan", names, layout)
    clips = gtzan.GtzanRandom8020().load(data_dir)
    assert _rows(clips) == _rows(reference) and clips.missing and len(clips) == 31
    assert [m[0] for m in clips.missing] == [m[0] for m in reference.missing]
    if layout.startswith("parquet"):
        by_id = {c.id: c for c in clips}
        assert by_id[fx.CORRUPT].source == fx.CORRUPT_BYTES
        first = next(c for c in reference if c.id != fx.CORRUPT)
        assert np.array_equal(load_audio(by_id[first.id].source, 16_000),
                              load_audio(first.source, 16_000))
        again = {c.id: c.source for c in gtzan.GtzanTenFold().load(data_dir)}
        assert all(again[c.id] is c.source for c in clips)  # one copy of the bytes per run


def test_odd_files_in_folders(tmp_path: Path) -> None:
    """macOS ``._`` forks are not clips; an ``.au`` twin of a ``.wav`` is the same clip."""
    root = fx.write_folder(tmp_path / "gtzan", ["blues.00000", "rock.00001"])
    (root / "genres" / "blues" / "._blues.00000.wav").write_bytes(b"\0" * 10)
    (root / "genres" / "blues" / "blues.00000.au").write_bytes(b".snd")
    (root / "genres" / "rock" / "rock.00002.au").write_bytes(b".snd")
    clips = gtzan.GtzanRandom8020().load(tmp_path)
    assert {c.id: Path(c.source).suffix for c in clips} == {
        "blues.00000": ".wav", "rock.00001": ".wav", "rock.00002": ".au"}


def test_listed_clip_missing_on_disk_is_reported(tmp_path: Path) -> None:
    names = fx.stratified_subset(fx.listed_names(), 2)
    root = fx.write_folder(tmp_path / "gtzan", names)
    gone = names[5]
    (root / "genres" / fx.genre_of(gone) / f"{gone}.wav").unlink()
    clips = gtzan.GtzanFaultFiltered().load(tmp_path)
    missing = dict(clips.missing)
    assert len(clips) == len(names) - 1 and len(missing) == 930 - len(clips)
    assert gone in missing and gone not in {c.id for c in clips}
    assert f"gtzan-fault-filtered puts it in the {fx.listed_names()[gone]} split" in missing[gone]
    assert str(root) in missing[gone] and "original layout" in missing[gone]
    ten_fold = dict(gtzan.GtzanTenFold().load(tmp_path).missing)
    assert re.search(r"gtzan-10fold-seed0 puts it in fold \d$", ten_fold[gone])


def test_missing_data_error_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError) as info:
        gtzan.GtzanFaultFiltered().load(tmp_path / "nowhere")
    text = str(info.value)
    for needle in ("genres/<genre>/<genre>.000NN.wav", "Data/genres_original", "parquet",
                   "EMBENCH_DATA", "--data-dir", "kaggle", "huggingface", "jazz.00054",
                   str(tmp_path / "nowhere" / "gtzan")):
        assert needle.lower() in text.lower(), needle
    # parquet files of another dataset are named with their columns, not read as GTZAN
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "gtzan").mkdir()
    pq.write_table(pa.table({"caption": ["a song"]}), tmp_path / "gtzan" / "other.parquet")
    with pytest.raises(MissingDataError, match=r"other.parquet: columns \['caption'\]"):
        gtzan.GtzanFaultFiltered().load(tmp_path)


# -- protocols ---------------------------------------------------------------------------------
def test_registration_and_metadata() -> None:
    registered: list[tuple[Task, tuple]] = []
    gtzan.register_tasks(register=lambda task, aliases=(): registered.append((task, aliases)))
    assert [t.name for t, _ in registered] == list(TASKS)
    assert registered[0][1] == ("gtzan-fault-filtered",)
    for task, _ in registered:
        info = task.info
        assert info.dataset_id == "gtzan" and info.version == "1"
        assert info.main_score == "accuracy" and info.protocols == ("probe", "linear", "finetune")
        assert task.requires_features("probe") and not task.requires_features("finetune")
        assert "Tzanetakis" in info.citation and info.homepage
    assert "Kereliuk" in registered[0][0].info.citation


@pytest.mark.skipif("gtzan" not in {ep.name for ep in metadata.entry_points(group="embench")},
                    reason="the gtzan entry point is not declared in this install yet")
def test_entry_point_loads_this_module() -> None:
    (ep,) = [ep for ep in metadata.entry_points(group="embench") if ep.name == "gtzan"]
    assert ep.load() is gtzan


@pytest.mark.parametrize("protocol,expected", [("probe", "mlp"), ("linear", "linear"),
                                               ("finetune", "finetune")])
def test_protocols_dispatch(protocol: str, expected: str, monkeypatch, tmp_path: Path) -> None:
    seen = []
    classification = ModuleType("embench.classification")
    classification.evaluate_classification = (  # type: ignore[attr-defined]
        lambda ctx, kind="mlp", **kw: seen.append(kind) or Evaluation({"accuracy": [1.0]}))
    finetune = ModuleType("embench.finetune")
    finetune.finetune_classification = (  # type: ignore[attr-defined]
        lambda ctx, **kw: seen.append("finetune") or Evaluation({"accuracy": [2.0]}))
    monkeypatch.setitem(sys.modules, "embench.classification", classification)
    monkeypatch.setitem(sys.modules, "embench.finetune", finetune)
    ctx = make_context(ClipSet("gtzan", "s", []), None, tmp_path, protocol=protocol)
    gtzan.GtzanFaultFiltered().evaluate(ctx)
    assert seen == [expected]
    with pytest.raises(EmbenchError, match="no protocol 'knn'"):
        gtzan.GtzanTenFold().evaluate(dataclasses.replace(ctx, protocol="knn"))


def test_test_labels_cannot_change_model_selection(one_thread, tmp_path: Path) -> None:
    names = fx.stratified_subset(fx.listed_names(), 6)
    clips = gtzan.GtzanFaultFiltered().load(fx.write_folder(tmp_path / "gtzan", names).parent)
    features = features_from_means(tmp_path / "cache", [c.id for c in clips], _class_means(clips),
                                   dataset_id="gtzan")
    test_idx = [i for i, c in enumerate(clips) if c.split == "test"]
    shuffled = np.random.default_rng(1).permutation([clips.clips[i].target for i in test_idx])
    permuted = list(clips.clips)
    for i, target in zip(test_idx, shuffled, strict=True):
        permuted[i] = dataclasses.replace(permuted[i], target=str(target))
    runs = []
    for clipset in (clips, dataclasses.replace(clips, clips=permuted)):
        ctx = make_context(clipset, features, tmp_path, seeds=(0, 1), protocol="probe")
        runs.append(gtzan.GtzanFaultFiltered().evaluate(ctx))
    chosen = [[(s["layer"], s["epoch"]) for s in r.details["seeds"]] for r in runs]
    assert chosen[0] == chosen[1] and chosen[0][0][0] == 1
    assert runs[0].scores["accuracy"][0] > 70 and runs[1].scores["accuracy"][0] < 40


def test_cross_validate_gives_every_clip_each_role_once(tmp_path: Path) -> None:
    names = fx.stratified_subset(fx.all_names(), 4)
    clips = gtzan.GtzanTenFold().load(fx.write_folder(tmp_path / "gtzan", names).parent)
    roles: Counter = Counter()
    logs: list[str] = []

    def protocol(ctx) -> Evaluation:
        k = int(ctx.clips.split_id.rsplit("fold", 1)[1])
        assert ctx.output_dir.name == f"fold{k}" and ctx.output_dir.is_dir()
        roles.update((c.id, c.split) for c in ctx.clips)
        ctx.log("hello")
        return Evaluation(scores={"accuracy": [k, 10 + k]}, baselines={"chance": 10.0},
                          flags=["odd"] if k % 2 else [], details={"k": k})

    ctx = make_context(clips, None, tmp_path, seeds=(0, 1), log=logs.append)
    folds = gtzan.GtzanTenFold().folds({c.id: c.target for c in clips})
    result = gtzan_splits.cross_validate(ctx, folds, 10, protocol, {"fold_seed": 0})
    assert result.scores == {"accuracy": [4.5, 14.5]} and result.baselines == {"chance": 10.0}
    assert result.flags == ["odd"] and logs[0] == "fold 0: hello" and len(logs) == 10
    assert [f["details"]["k"] for f in result.details["folds"]] == list(range(10))
    assert result.details["cross_validation"]["fold_seed"] == 0
    assert all(roles[(c.id, "test")] == 1 and roles[(c.id, "valid")] == 1
               and roles[(c.id, "train")] == 8 for c in clips)
    assert sum(f["n_clips"]["test"] for f in result.details["folds"]) == len(clips) == 40


def test_ten_fold_end_to_end(one_thread, tmp_path: Path) -> None:
    names = fx.stratified_subset(fx.all_names(), 20)
    task = gtzan.GtzanTenFold()
    clips = task.load(fx.write_folder(tmp_path / "gtzan", names).parent)
    assert len(clips) == 200 and len(clips.missing) == 800
    features = features_from_means(tmp_path / "cache", [c.id for c in clips],
                                   _class_means(clips), dataset_id="gtzan")
    ctx = make_context(clips, features, tmp_path, seeds=(0, 1), protocol="linear")
    result = task.evaluate(ctx)
    folds = result.details["folds"]
    assert len(folds) == 10 and sum(f["n_clips"]["test"] for f in folds) == 200
    for metric in ("accuracy", "macro_f1"):
        assert result.scores[metric] == pytest.approx(
            [np.mean([f["scores"][metric][i] for f in folds]) for i in range(2)])
    assert result.baselines["chance"] == pytest.approx(10.0)
    assert result.scores["accuracy"][0] > 80 and folds[3]["details"]["probe"] == "linear"
    assert result.details["cross_validation"]["split_id"] == "gtzan-10fold-seed0"


# -- through the CLI ---------------------------------------------------------------------------
@pytest.fixture
def gtzan_plugin(monkeypatch):
    """melspec from its entry point and this module registered in-process (whether or not the
    gtzan entry point is declared yet, without a duplicate)."""
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "melspec")
    plugins.reset()
    plugins.register_plugin(gtzan, name="gtzan")
    yield


def test_cli_run_on_generated_gtzan(gtzan_plugin, one_thread, tmp_path: Path) -> None:
    names = fx.stratified_subset(fx.listed_names(), 3) + [fx.CORRUPT]
    fx.write_folder(tmp_path / "data" / "gtzan", names)
    out = tmp_path / "out"
    results = {}
    for protocol in ("probe", "linear"):
        code = run_main(["run", "-e", "melspec", "-t", "gtzan", "-p", protocol,
                         "--data-dir", str(tmp_path / "data"), "--seeds", "1", "--no-progress",
                         "--num-workers", "0", "-o", str(out / protocol)])
        assert code == 0
        (path,) = (out / protocol).glob("run-*.json")
        (results[protocol],) = json.loads(path.read_text())["results"]
    for protocol, result in results.items():
        assert result["split_id"] == "gtzan-fault-filtered" and result["protocol"] == protocol
        assert result["dataset_id"] == "gtzan" and result["task_version"] == "1"
        assert [s["clip_id"] for s in result["skipped"]] == [fx.CORRUPT]
        assert len(result["missing"]) == 930 - len(names)
        assert result["n_clips"] == {"train": 30, "valid": 30, "test": 30}
        assert result["summary"]["accuracy"]["mean"] > max(result["baselines"].values()) + 20
