"""Tests for the offline toy tasks: the synthesiser, on-disk generation and nearest-neighbour
captioning (run on real cached features computed from the generated audio)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf

from embench import ClipSet, EvalContext, Evaluation, Task
from embench.cache import CacheKey, EmbeddingCache
from embench.features import Features


def _import_toy() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``embench_tasks.toy`` when installed; otherwise the ``tasks/`` folder under that name."""
    if importlib.util.find_spec("embench_tasks") is None:
        root = Path(__file__).resolve().parents[1] / "tasks"
        spec = importlib.util.spec_from_file_location(
            "embench_tasks", root / "__init__.py", submodule_search_locations=[str(root)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["embench_tasks"] = package
        spec.loader.exec_module(package)
    return tuple(
        importlib.import_module(f"embench_tasks.{m}")
        for m in ("toy", "toy_synth", "toy_captioning")
    )  # type: ignore[return-value]


toy, toy_synth, toy_captioning = _import_toy()
N_GENRES = len(toy_synth.GENRES)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("toydata")


@pytest.fixture(scope="module")
def genres(data_dir: Path) -> ClipSet:
    return toy.ToyGenres().load(data_dir)


@pytest.fixture(scope="module")
def captions(data_dir: Path) -> ClipSet:
    return toy.ToyCaptions().load(data_dir)


# -- synthesiser -------------------------------------------------------------------------------
def test_clip_is_a_pure_function_of_stream_and_index() -> None:
    a, pa = toy_synth.generate_clip(0, 7)
    b, pb = toy_synth.generate_clip(0, 7)
    assert a.tobytes() == b.tobytes() and pa == pb
    assert a.dtype == np.float32 and a.shape == (64_000,)
    assert np.abs(a).max() <= 1.0
    assert not np.array_equal(a, toy_synth.generate_clip(0, 8)[0])
    assert not np.array_equal(a, toy_synth.generate_clip(1, 7)[0])  # datasets differ


def test_generation_is_byte_identical_across_directories(tmp_path: Path) -> None:
    task = toy.ToyGenres(clips_per_genre=2)
    roots = []
    for name in ("a", "b"):
        task.load(tmp_path / name)
        roots.append(task.dataset_dir(tmp_path / name))
    files_a = sorted(p.relative_to(roots[0]) for p in roots[0].rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(roots[1]) for p in roots[1].rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 2 * N_GENRES + 1
    for rel in files_a:
        assert (roots[0] / rel).read_bytes() == (roots[1] / rel).read_bytes(), rel


def _centroid_hz(audio: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / toy_synth.SAMPLE_RATE)
    return float((spec * freqs).sum() / spec.sum())


def test_classes_differ_in_audio_but_not_in_level(genres: ClipSet) -> None:
    centroid: dict[str, list[float]] = {g: [] for g in toy_synth.GENRE_NAMES}
    peak: dict[str, list[float]] = {g: [] for g in toy_synth.GENRE_NAMES}
    for clip in genres:
        audio, sr = sf.read(clip.source, dtype="float32")
        assert sr == toy_synth.SAMPLE_RATE and audio.shape == (64_000,)
        centroid[clip.target].append(_centroid_hz(audio))
        peak[clip.target].append(float(np.abs(audio).max()))
    mean_centroid = {g: np.mean(v) for g, v in centroid.items()}
    assert mean_centroid["chiptune"] > 1.5 * mean_centroid["ambient"]
    assert mean_centroid["synth-pop"] > mean_centroid["hip-hop"]
    # level is drawn independently of the genre: every class spans most of the shared range
    for values in peak.values():
        assert min(values) < 0.25 and max(values) > 0.4


def test_genre_parameters_follow_their_distributions(genres: ClipSet, data_dir: Path) -> None:
    meta = json.loads((toy.ToyGenres().dataset_dir(data_dir) / "metadata.json").read_text())
    bpm: dict[str, list[int]] = {g: [] for g in toy_synth.GENRE_NAMES}
    for record in meta["clips"]:
        bpm[record["label"]].append(record["params"]["bpm"])
    for genre in toy_synth.GENRES:
        assert genre.bpm[0] <= min(bpm[genre.name]) <= max(bpm[genre.name]) <= genre.bpm[1]
    assert np.mean(bpm["drum-and-bass"]) > np.mean(bpm["house"]) > np.mean(bpm["ambient"])


# -- loading -----------------------------------------------------------------------------------
def test_splits_are_fixed_stratified_60_20_20(genres: ClipSet, captions: ClipSet) -> None:
    for clipset, name in ((genres, "toy-genres"), (captions, "toy-captions")):
        assert len(clipset) == 240
        assert clipset.counts() == {"train": 144, "valid": 48, "test": 48}
        assert clipset.split_id == f"{name}-v{toy.DATA_VERSION}-fixed"
        assert clipset.dataset_id == f"embench/{name}"
        assert all(isinstance(c.source, Path) and c.source.is_file() for c in clipset)
    assert genres.labels == toy_synth.GENRE_NAMES
    for genre in toy_synth.GENRE_NAMES:
        splits = ("train", "valid", "test")
        per_split = {s: sum(c.target == genre for c in genres.split(s)) for s in splits}
        assert per_split == {"train": 24, "valid": 8, "test": 8}


def test_load_is_idempotent(genres: ClipSet, data_dir: Path, monkeypatch) -> None:
    def no_regeneration(*args, **kwargs):
        raise AssertionError("a complete dataset must not be generated again")

    monkeypatch.setattr(toy, "build_dataset", no_regeneration)
    again = toy.ToyGenres().load(data_dir)
    assert [(c.id, c.source, c.target, c.split) for c in again] == [
        (c.id, c.source, c.target, c.split) for c in genres
    ]


def test_killed_generation_leaves_nothing_trusted(tmp_path: Path, monkeypatch) -> None:
    task = toy.ToyGenres(clips_per_genre=1)
    root = task.dataset_dir(tmp_path)
    real = toy_synth.generate_clip
    calls = {"n": 0}

    def dies_midway(stream: int, index: int):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt  # as if the run were killed
        return real(stream, index)

    monkeypatch.setattr(toy_synth, "generate_clip", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        task.load(tmp_path)
    assert not root.exists()
    monkeypatch.setattr(toy_synth, "generate_clip", real)

    # the leftover of a generation whose process died (and any half-written root) is cleaned up
    dead = root.with_name(f".{root.name}.tmp-999999999-deadbeef")
    (dead / "audio").mkdir(parents=True)
    (dead / "metadata.json").write_text("{}")
    assert len(task.load(tmp_path)) == N_GENRES
    assert not dead.exists()
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_damaged_dataset_is_regenerated(tmp_path: Path) -> None:
    task = toy.ToyGenres(clips_per_genre=1)
    clips = task.load(tmp_path)
    victim = clips.clips[2].source
    original = victim.read_bytes()
    victim.unlink()
    task.load(tmp_path)
    assert victim.read_bytes() == original


def test_a_data_folder_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    from embench import MissingDataError

    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    with pytest.raises(MissingDataError, match="Cannot generate the toy dataset in .*--data-dir"):
        toy.ToyGenres(clips_per_genre=1).load(blocker / "data")


# -- captions ----------------------------------------------------------------------------------
def test_captions_state_the_parameters(captions: ClipSet, data_dir: Path) -> None:
    meta = json.loads((toy.ToyCaptions().dataset_dir(data_dir) / "metadata.json").read_text())
    by_id = {r["id"]: r for r in meta["clips"]}
    templates = set()
    for clip in captions:
        params = toy_synth.ClipParams(**{
            k: tuple(v) if isinstance(v, list) else v for k, v in by_id[clip.id]["params"].items()
        })
        text = clip.target
        assert text == toy_synth.caption(params)
        for word in (
            f"{params.bpm} BPM",
            params.key,
            params.genre,
            toy_synth.tempo_word(params.bpm),
            toy_synth.timbre_words(params),
            params.style,
            toy_synth.PATTERNS[params.drums].phrase,
        ):
            assert word.lower() in text.lower(), (word, text)
        templates.add((params.bpm + params.root) % len(toy_synth._TEMPLATES))
    assert len(templates) == len(toy_synth._TEMPLATES)
    assert len({c.target for c in captions}) > 0.9 * len(captions)


# -- evaluation on cached features -------------------------------------------------------------
def _spectral_frames(path: Path) -> list[np.ndarray]:
    """Two "layers" of simple features: log band energies (timbre) and their frame-to-frame
    absolute change (rhythm), 32 log-spaced bands, 32 ms frames."""
    audio, _ = sf.read(path, dtype="float32")
    frames = np.lib.stride_tricks.sliding_window_view(audio, 512)[::256] * np.hanning(512)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = np.unique(np.geomspace(1, 257, 33).astype(int) - 1)
    bands = np.log(np.add.reduceat(power, edges, axis=1) + 1e-8)
    return [bands, np.abs(np.diff(bands, axis=0))]


def _features(clipset: ClipSet, root: Path, fn=_spectral_frames) -> Features:
    key = CacheKey(encoder="numpy-spectrum", encoder_version="1", weights="pretrained",
                   revision=None, sample_rate=16_000, window_s=None, hop_s=None, frame_rate=62.5,
                   compute_dtype="fp32", dataset_id=clipset.dataset_id, dataset_revision=None)
    cache = EmbeddingCache(root, key)
    cache.prepare()
    layers = {c.id: (4.0, fn(c.source)) for c in clipset}
    cache.write_shard(layers)
    dims = tuple(a.shape[1] for a in next(iter(layers.values()))[1])
    return Features(cache=cache, clip_ids=[c.id for c in clipset], num_layers=len(dims), dims=dims)


def _context(clipset: ClipSet, features: Features, out: Path) -> EvalContext:
    import torch

    return EvalContext(clips=clipset, protocol="nearest-neighbour", seeds=[0, 1, 2],
                       device=torch.device("cpu"), output_dir=out, features=features,
                       log=lambda msg: None)


def test_nearest_neighbour_beats_the_constant_caption(captions: ClipSet, tmp_path: Path) -> None:
    features = _features(captions, tmp_path / "cache")
    result = toy.ToyCaptions().evaluate(_context(captions, features, tmp_path / "out"))
    assert isinstance(result, Evaluation)
    assert set(result.scores) == {"bleu4", "distinct_ratio", "mean_length"}
    for values in result.scores.values():
        assert len(values) == 3 and len(set(values)) == 1  # deterministic: one value per seed
    bleu = result.scores["bleu4"][0]
    assert bleu > result.baselines["constant-caption"] + 5.0
    assert toy_captioning.FLAG_NOT_BEATING_CONSTANT not in result.flags
    assert result.scores["distinct_ratio"][0] > 0.5
    assert 10 < result.scores["mean_length"][0] < 25
    assert result.details["layer"] in (0, 1) and len(result.details["valid_bleu4_per_layer"]) == 2
    lines = (tmp_path / "out" / "captions.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    test_refs = {c.id: c.target for c in captions.split("test")}
    assert {r["clip_id"] for r in rows} == set(test_refs)
    train_caps = {c.target for c in captions.split("train")}
    for row in rows:
        assert row["reference"] == test_refs[row["clip_id"]] and row["hypothesis"] in train_caps


def test_uninformative_features_are_flagged_consistently(captions: ClipSet, tmp_path: Path) -> None:
    features = _features(captions, tmp_path / "cache", fn=lambda path: [np.zeros((3, 4))])
    result = toy.ToyCaptions().evaluate(_context(captions, features, tmp_path / "out"))
    bleu = result.scores["bleu4"][0]
    assert result.scores["distinct_ratio"][0] == pytest.approx(1 / 48)  # all ties: one caption
    flagged = toy_captioning.FLAG_NOT_BEATING_CONSTANT in result.flags
    assert flagged == (bleu <= result.baselines["constant-caption"])


def test_skipped_clips_are_left_out(captions: ClipSet, tmp_path: Path) -> None:
    features = _features(captions, tmp_path / "cache")
    dropped = captions.split("test")[0].id
    features.skipped = {dropped: "undecodable"}
    result = toy.ToyCaptions().evaluate(_context(captions, features, tmp_path / "out"))
    assert result.details["n_clips"] == {"train": 144, "valid": 48, "test": 47}


# -- plugin surface ----------------------------------------------------------------------------
def test_hook_registers_both_tasks() -> None:
    registered: list[Task] = []
    toy.register_tasks(register=lambda task, aliases=(): registered.append(task))
    assert [t.name for t in registered] == ["toy-genres", "toy-captions"]
    genres_info, captions_info = (t.info for t in registered)
    assert genres_info.main_score == "accuracy" and genres_info.protocols == ("probe", "linear")
    assert all(registered[0].requires_features(p) for p in ("probe", "linear"))
    assert captions_info.main_score == "bleu4"
    assert registered[1].requires_features("nearest-neighbour")


@pytest.mark.parametrize("protocol,kind", [("probe", "mlp"), ("linear", "linear")])
def test_genres_delegate_to_the_shared_classifier(protocol: str, kind: str, monkeypatch) -> None:
    seen = {}

    def fake_evaluate(ctx, kind: str = "mlp", **kwargs):
        seen["kind"] = kind
        return Evaluation(scores={"accuracy": [1.0]})

    fake = ModuleType("embench.classification")
    fake.evaluate_classification = fake_evaluate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "embench.classification", fake)
    ctx = EvalContext(clips=ClipSet("d", "s", []), protocol=protocol, seeds=[0],
                      device=None, output_dir=Path("."))  # type: ignore[arg-type]
    toy.ToyGenres().evaluate(ctx)
    assert seen["kind"] == kind
