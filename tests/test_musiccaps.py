"""The MusicCaps task: the shipped metadata CSV, finding audio under every accepted name (excerpts
and full tracks), missing-clip accounting, the official split, and the offline-tested fetcher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from embench import EmbenchError, EvalContext, MissingDataError, load_audio
from embench import musiccaps_fetch as fetch
from embench_tasks import musiccaps
from embench_tasks.musiccaps_layouts import (
    assign_splits,
    csv_path,
    parse_name,
    read_metadata,
)
from tests.helpers_cli import run_main

SR = 8000


@pytest.fixture(scope="module")
def rows():
    return read_metadata(csv_path(Path("/nonexistent")))


def _tone(seconds: float, sr: int = SR) -> np.ndarray:
    """A ramp, so a crop's position can be read back from its first sample."""
    return (np.arange(int(seconds * sr)) / (seconds * sr)).astype(np.float32) * 0.9


def _write(path: Path, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _tone(seconds), SR)
    return path


def test_shipped_csv_parses(rows) -> None:
    assert len(rows) == 5521 and len({r.ytid for r in rows}) == 5521
    assert sum(r.is_audioset_eval for r in rows) == 2858
    assert all(isinstance(r.is_balanced_subset, bool) for r in rows)
    first = rows[0]
    assert first.ytid == "-0Gj8-vB1q4" and (first.start_s, first.end_s) == (30.0, 40.0)
    assert first.is_audioset_eval is True and first.is_balanced_subset is False
    assert first.audioset_positive_labels == ("/m/0140xf", "/m/02cjck", "/m/04rlf")
    assert first.caption.startswith("The low quality recording features a ballad song")
    assert "sustained strings, mellow piano melody and soft" in first.caption
    quoted = [r for r in rows if '"' in r.caption]
    assert len(quoted) == 94  # quotes inside captions come back unescaped
    assert any("\n" in r.caption for r in rows)  # newlines inside quoted captions survive


def test_caption_with_commas_and_quotes_round_trips(tmp_path, rows) -> None:
    row = next(r for r in rows if '"' in r.caption and "," in r.caption)
    copy = tmp_path / "data" / "musiccaps" / "musiccaps-public.csv"
    copy.parent.mkdir(parents=True)
    import csv

    with open(copy, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list",
                    "caption", "author_id", "is_balanced_subset", "is_audioset_eval"])
        w.writerow([row.ytid, "30", "40", "/m/a,/m/b", "['x']", row.caption, "1", "True",
                    "False"])
    assert csv_path(tmp_path / "data") == copy  # a local CSV wins over the shipped one
    (back,) = read_metadata(copy)
    assert back.caption == row.caption and back.is_balanced_subset is True
    assert back.is_audioset_eval is False


def test_names(tmp_path) -> None:
    assert parse_name(Path("-0Gj8-vB1q4.flac")) == ("-0Gj8-vB1q4", False)
    assert parse_name(Path("-0Gj8-vB1q4_30_40.wav")) == ("-0Gj8-vB1q4", True)
    assert parse_name(Path("-0Gj8-vB1q4-30.0-40.0.MP3")) == ("-0Gj8-vB1q4", True)
    assert parse_name(Path(".-0Gj8-vB1q4.partial.flac")) is None
    assert parse_name(Path("-0Gj8-vB1q4.txt")) is None


def test_load_excerpts_full_track_and_missing(tmp_path, rows) -> None:
    data = tmp_path / "data"
    audio = data / "musiccaps" / "audio"
    test_rows = [r for r in rows if r.is_audioset_eval][:2]
    train_rows = [r for r in rows if not r.is_audioset_eval][:2]
    _write(audio / f"{test_rows[0].ytid}.flac", 10.0)
    _write(audio / f"{test_rows[1].ytid}_30_40.wav", 10.2)
    _write(data / "musiccaps" / f"{train_rows[0].ytid}.ogg", 10.0)  # the musiccaps/ root works
    full = train_rows[1]
    _write(audio / f"{full.ytid}.wav", full.end_s + 5)  # the whole YouTube track
    (audio / f".{full.ytid}.partial.flac").write_bytes(b"junk")  # ignored: hidden
    cs = musiccaps.MusicCaps().load(data)
    assert cs.dataset_id == "google/MusicCaps" and cs.split_id == "musiccaps-audioset-eval-seed0"
    assert len(cs) == 4 and len(cs.missing) == 5521 - 4
    assert all(reason == musiccaps.MISSING_REASON for _, reason in cs.missing)
    by_id = {c.id: c for c in cs}
    assert by_id[test_rows[0].ytid].split == "test" and by_id[test_rows[1].ytid].split == "test"
    assert {by_id[r.ytid].split for r in train_rows} <= {"train", "valid"}
    assert by_id[test_rows[0].ytid].target == test_rows[0].caption
    excerpt = by_id[test_rows[0].ytid]
    assert excerpt.start_s is None and excerpt.end_s is None
    cropped = by_id[full.ytid]
    assert (cropped.start_s, cropped.end_s) == (full.start_s, full.end_s)
    wave = load_audio(cropped.source, SR, cropped.start_s, cropped.end_s)
    assert len(wave) == 10 * SR
    ramp = _tone(full.end_s + 5)
    assert wave[0] == pytest.approx(ramp[int(full.start_s * SR)], abs=1e-3)


def test_split_sizes_and_deterministic_valid(rows) -> None:
    a, b = assign_splits(rows, 0), assign_splits(rows, 0)
    assert a == b
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "valid", "test")}
    assert counts == {"train": 2663 - 266, "valid": 266, "test": 2858}
    assert assign_splits(rows, 1) != a
    eval_ids = {r.ytid for r in rows if r.is_audioset_eval}
    assert {k for k, v in a.items() if v == "test"} == eval_ids


def test_split_of_present_clips_follows_full_split(tmp_path, rows) -> None:
    data = tmp_path / "data"
    picked = rows[:40]
    for r in picked:
        _write(data / "musiccaps" / "audio" / f"{r.ytid}.flac", 0.5)
    cs = musiccaps.MusicCaps().load(data)
    full = assign_splits(rows, 0)
    assert {c.id: c.split for c in cs} == {r.ytid: full[r.ytid] for r in picked}
    assert len(cs.split("test")) == sum(r.is_audioset_eval for r in picked)


def test_no_audio_raises_with_instructions(tmp_path) -> None:
    with pytest.raises(MissingDataError, match="embench data musiccaps --download"):
        musiccaps.MusicCaps().load(tmp_path / "empty")


def test_parquet_copy(tmp_path, rows) -> None:
    import io

    from datasets import Audio, Dataset

    buf = io.BytesIO()
    sf.write(buf, _tone(10.0), SR, format="WAV")
    r = rows[3]
    ds = Dataset.from_dict({"audio": [{"bytes": buf.getvalue(), "path": f"{r.ytid}.wav"}],
                            "ytid": [r.ytid], "caption": ["a parquet caption"]})
    ds = ds.cast_column("audio", Audio(decode=False))
    folder = tmp_path / "data" / "musiccaps"
    folder.mkdir(parents=True)
    ds.to_parquet(str(folder / "train.parquet"))
    cs = musiccaps.MusicCaps().load(tmp_path / "data")
    (clip,) = cs.clips
    assert clip.id == r.ytid and isinstance(clip.source, bytes)
    assert clip.target == "a parquet caption"
    assert len(load_audio(clip.source, SR)) == 10 * SR


def test_evaluate_dispatch(tmp_path, monkeypatch) -> None:
    import sys
    import types

    task = musiccaps.MusicCaps()
    fake = types.ModuleType("embench.captioning")
    fake.evaluate_captioning = lambda ctx, **kw: ("frozen", ctx.protocol)
    monkeypatch.setitem(sys.modules, "embench.captioning", fake)
    import embench

    monkeypatch.setattr(embench, "captioning", fake, raising=False)

    def ctx(protocol: str) -> EvalContext:
        return EvalContext(clips=None, protocol=protocol, seeds=[0], device=None,  # type: ignore[arg-type]
                           output_dir=tmp_path)

    assert task.evaluate(ctx("frozen")) == ("frozen", "frozen")
    fine = types.ModuleType("embench.finetune_captioning")
    fine.finetune_captioning = lambda ctx, **kw: ("finetune", ctx.protocol)
    monkeypatch.setitem(sys.modules, "embench.finetune_captioning", fine)
    monkeypatch.setattr(embench, "finetune_captioning", fine, raising=False)
    assert task.evaluate(ctx("finetune")) == ("finetune", "finetune")
    with pytest.raises(EmbenchError, match="no protocol"):
        task.evaluate(ctx("probe"))
    assert task.info.main_score == "bleu4" and task.info.requires_features == ("frozen",)


class FakeYouTube:
    """Stands in for yt-dlp: 'downloads' a 30 s WAV (the full track) or fails for dead ids."""

    def __init__(self, dead: set[str]):
        self.dead, self.calls = dead, []

    def __call__(self, ytid: str, folder: Path) -> Path:
        self.calls.append(ytid)
        if ytid in self.dead:
            raise RuntimeError("Video unavailable")
        return _write(folder / f"{ytid}.wav", 45.0)


def test_fetch_cuts_records_failures_and_resumes(tmp_path, rows) -> None:
    picked = rows[:4]
    audio = tmp_path / "audio"
    yt = FakeYouTube(dead={picked[1].ytid})
    report = fetch.fetch(picked, set(), audio, yt, log=lambda m: None)
    assert report.downloaded == [picked[0].ytid, picked[2].ytid, picked[3].ytid]
    assert list(report.failed) == [picked[1].ytid]
    out = fetch.excerpt_path(audio, picked[0].ytid)
    assert out.name == f"{picked[0].ytid}.flac"
    info = sf.info(str(out))
    assert info.format == "FLAC" and info.frames == 10 * SR
    data, _ = sf.read(str(out), dtype="float32")
    assert data[0] == pytest.approx(_tone(45.0)[int(picked[0].start_s * SR)], abs=1e-3)
    failed = json.loads((audio / fetch.FAILED_NAME).read_text())
    assert "Video unavailable" in failed[picked[1].ytid]["reason"]
    assert not [p for p in audio.iterdir() if p.name.startswith(".")]  # no temp files left
    yt.calls.clear()
    again = fetch.fetch(picked, set(), audio, yt, log=lambda m: None)
    assert yt.calls == [] and again.skipped_failed == [picked[1].ytid]
    assert len(again.present) == 3
    yt.dead.clear()
    retried = fetch.fetch(picked, set(), audio, yt, retry_failed=True, log=lambda m: None)
    assert retried.downloaded == [picked[1].ytid] and fetch.load_failed(audio) == {}


def test_fetch_limit_and_interrupted_cut_leaves_nothing(tmp_path, rows) -> None:
    audio = tmp_path / "audio"
    yt = FakeYouTube(dead=set())
    report = fetch.fetch(rows[:5], {rows[0].ytid}, audio, yt, limit=2, log=lambda m: None)
    assert report.present == [rows[0].ytid] and len(report.downloaded) == 2
    bad = tmp_path / "short.wav"
    _write(bad, 5.0)  # shorter than start_s: nothing to cut
    with pytest.raises(ValueError):
        fetch.cut_excerpt(bad, audio / "x.flac", 30, 40)
    assert not (audio / "x.flac").exists() and not list(audio.glob(".*"))


def test_cli_prints_instructions(tmp_path, rows, capsys) -> None:
    data = tmp_path / "data"
    _write(data / "musiccaps" / "audio" / f"{rows[0].ytid}.flac", 1.0)
    assert run_main(["data", "musiccaps", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "1 of 5521 clips present, 5520 missing" in out
    assert "pip install 'embench[download]'" in out and "--download" in out
    assert "gone" in out


def test_cli_download_with_fake_downloader(tmp_path, rows, monkeypatch, capsys) -> None:
    data = tmp_path / "data"
    real_run = fetch.run
    monkeypatch.setattr(fetch, "run", lambda *a, **k: real_run(
        *a, **{**k, "downloader": FakeYouTube(dead=set())}))
    assert run_main(["data", "musiccaps", "--data-dir", str(data), "--download",
                     "--limit", "2"]) == 0
    assert "Downloaded 2, failed 0" in capsys.readouterr().out
    assert len(musiccaps.MusicCaps().load(data)) == 2


def test_download_without_yt_dlp_is_a_clear_error(tmp_path, monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "yt_dlp", None)
    assert run_main(["data", "musiccaps", "--data-dir", str(tmp_path), "--download"]) == 2
    assert "embench[download]" in capsys.readouterr().err
