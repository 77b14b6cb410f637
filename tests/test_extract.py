"""Extraction: batching, caching, skipped clips, and resuming after kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from embench import Clip, ClipSet
from embench.errors import EmbenchError
from embench.extract import extract
from tests.fakes import SpectralEncoder, ToneTask

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def _clips(tmp_path) -> ClipSet:
    return ToneTask(corrupt=True).load(tmp_path / "data")


def test_extracts_all_decodable_clips_and_records_skipped(tmp_path):
    clips = _clips(tmp_path)
    feats = extract(SpectralEncoder(), clips, tmp_path / "cache", device=CPU, num_workers=0,
                    show_progress=False, log=lambda m: None)
    assert feats.clip_ids == [c.id for c in clips if c.id != "broken"]
    assert "Format not recognised" in feats.skipped["broken"]
    frames = feats.frames(0)
    assert all(f.shape == (2, 8) for f in frames)  # 2 s clips at the 1 Hz cache rate
    assert feats.clip_means(1).shape == (12, 8)


def test_second_run_reuses_cache_without_loading_weights(tmp_path):
    clips = _clips(tmp_path)
    first = SpectralEncoder()
    extract(first, clips, tmp_path / "cache", device=CPU, num_workers=0, show_progress=False,
            log=lambda m: None)
    assert first.load_calls == 1
    again = SpectralEncoder()
    messages: list[str] = []
    feats = extract(again, clips, tmp_path / "cache", device=CPU, num_workers=0,
                    show_progress=False, log=messages.append)
    assert again.load_calls == 0 and len(feats.clip_ids) == 12
    assert "all 13 clips cached" not in messages[0]  # the corrupt clip is retried, not cached


def test_a_replaced_file_is_embedded_again(tmp_path):
    """Same clip id, same size, other audio: the cache must not serve the old embedding."""
    clips = _clips(tmp_path)
    extract(SpectralEncoder(), clips, tmp_path / "cache", device=CPU, num_workers=0,
            show_progress=False, log=lambda m: None)
    source = {c.id: c.source for c in clips}
    shutil.copy(source["high0"], source["low0"])  # a high tone where a low one was
    messages: list[str] = []
    again = extract(SpectralEncoder(), clips, tmp_path / "cache", device=CPU, num_workers=0,
                    show_progress=False, log=messages.append)
    assert "11 of 13 clips cached, extracting 2" in messages[0]  # low0, and the corrupt clip
    fresh = extract(SpectralEncoder(), clips, tmp_path / "fresh", device=CPU, num_workers=0,
                    show_progress=False, log=lambda m: None)
    np.testing.assert_array_equal(again.clip_means(0, ["low0"]), fresh.clip_means(0, ["low0"]))
    assert not np.array_equal(again.clip_means(0, ["low0"]), again.clip_means(0, ["low1"]))


def test_batched_equals_one_at_a_time_and_workers_change_nothing(tmp_path):
    clips = _clips(tmp_path)
    one = extract(SpectralEncoder(), clips, tmp_path / "c1", device=CPU, batch_size=1,
                  num_workers=0, show_progress=False, log=lambda m: None)
    many = extract(SpectralEncoder(), clips, tmp_path / "c2", device=CPU, batch_size=8,
                   num_workers=1, show_progress=False, log=lambda m: None)
    for layer in range(2):
        for a, b in zip(one.frames(layer), many.frames(layer), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_long_clip_is_windowed_and_pooled_to_frame_rate(tmp_path):
    sr = 16000
    sf.write(tmp_path / "long.wav", np.random.default_rng(1).standard_normal(sr * 7 + 800) * 0.1,
             sr)
    clips = ClipSet("t/long", "s", [Clip("long", tmp_path / "long.wav", "x", "train")])
    feats = extract(SpectralEncoder(), clips, tmp_path / "cache", device=CPU, frame_rate=2.0,
                    num_workers=0, show_progress=False, log=lambda m: None)
    assert feats.frames(0)[0].shape == (15, 8)  # 7.05 s at 2 Hz -> 15 bins, all filled


def test_too_short_clip_is_skipped(tmp_path):
    sf.write(tmp_path / "tiny.wav", np.zeros(100, np.float32), 16000)
    sf.write(tmp_path / "fine.wav", np.ones(3200, np.float32) * 0.1, 16000)
    clips = ClipSet("t/short", "s", [Clip("tiny", tmp_path / "tiny.wav", "x", "train"),
                                      Clip("fine", tmp_path / "fine.wav", "x", "train")])
    feats = extract(SpectralEncoder(), clips, tmp_path / "cache", device=CPU, num_workers=0,
                    show_progress=False, log=lambda m: None)
    assert feats.clip_ids == ["fine"] and "too short" in feats.skipped["tiny"]


def test_encoder_output_not_matching_its_info_is_a_clear_error(tmp_path):
    class Liar(SpectralEncoder):
        def forward(self, waveforms):
            return super().forward(waveforms)[:, :1]

    with pytest.raises(EmbenchError, match="returned 1 layers but its info declares"):
        extract(Liar(), _clips(tmp_path), tmp_path / "cache", device=CPU, num_workers=0,
                show_progress=False, log=lambda m: None)


def test_a_frame_rate_finer_than_the_encoders_is_refused(tmp_path):
    with pytest.raises(EmbenchError, match="--frame-rate 20 is finer than fake-spectral's own "
                                           "10 frames per second"):
        extract(SpectralEncoder(), _clips(tmp_path), tmp_path / "cache", device=CPU,
                frame_rate=20.0, num_workers=0, show_progress=False, log=lambda m: None)
    feats = extract(SpectralEncoder(), _clips(tmp_path), tmp_path / "cache", device=CPU,
                    frame_rate=10.0, num_workers=0, show_progress=False, log=lambda m: None)
    assert feats.frames(0)[0].shape == (20, 8)  # 2 s at its native 10 Hz


def test_an_encoder_that_forgot_the_layer_axis_is_told_the_shape_to_return(tmp_path):
    class Flat(SpectralEncoder):
        def forward(self, waveforms):
            return super().forward(waveforms)[:, 0]  # [B, F, 8]: no layer axis

    with pytest.raises(EmbenchError, match=r"returned one 3-D tensor .* \[batch, layers, "):
        extract(Flat(), _clips(tmp_path), tmp_path / "cache", device=CPU, num_workers=0,
                show_progress=False, log=lambda m: None)


def test_an_encoder_returning_the_wrong_number_of_rows_is_named(tmp_path):
    class FirstRowOnly(SpectralEncoder):
        def forward(self, waveforms):
            return super().forward(waveforms)[:1]

    with pytest.raises(EmbenchError, match=r"returned 1 row\(s\) in layer 0 for a batch of 4"):
        extract(FirstRowOnly(), _clips(tmp_path), tmp_path / "cache", device=CPU,
                batch_size=4, num_workers=0, show_progress=False, log=lambda m: None)


def test_clips_with_non_finite_embeddings_are_skipped_not_cached(tmp_path):
    """A NaN would reach the probes as an unexplained chance-level score."""
    class NanOnHighTones(SpectralEncoder):
        def forward(self, waveforms):
            out = super().forward(waveforms)
            high = out[:, 0, :, 3].mean(1) > out[:, 0, :, 0].mean(1)  # 3-4 kHz over 0-1 kHz
            return torch.where(high[:, None, None, None], torch.nan, out)

    clips = _clips(tmp_path)
    lines: list[str] = []
    feats = extract(NanOnHighTones(), clips, tmp_path / "cache", device=CPU, batch_size=3,
                    num_workers=0, show_progress=False, log=lines.append)
    n_high = sum(c.id.startswith("high") for c in clips)
    decodable = [c for c in clips if c.id != "broken"]  # 2 s each
    timing = next(line for line in lines if "audio-s/s" in line)
    # the clip count and the audio-seconds cover the same clips: those the encoder ran on
    assert (f"embedded {len(decodable)} clips ({2 * len(decodable)} audio-s, {n_high} of them "
            f"non-finite and not cached)") in timing, timing
    nan_ids = {cid for cid, reason in feats.skipped.items() if "non-finite" in reason}
    assert nan_ids == {c.id for c in clips if c.id.startswith("high")}
    assert set(feats.clip_ids) == {c.id for c in clips if c.id.startswith("low")}
    assert all(np.isfinite(f).all() for f in feats.frames(0))


_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
from embench import plugins
from tests.fakes import FakePlugin, SpectralEncoder
plugins.register_plugin(FakePlugin(SpectralEncoder(float(os.environ["DELAY"]))), name="fake")
from embench.cli import main
main(sys.argv[1:])
"""


def _run_cli(tmp_path, cache: Path, out: Path, delay: float, wait: bool = True):
    script = tmp_path / "run_fake.py"
    script.write_text(_SCRIPT.format(repo=str(REPO)))
    env = {**os.environ, "DELAY": str(delay), "EMBENCH_CACHE": str(cache),
           "EMBENCH_DATA": str(tmp_path / "data")}
    args = [sys.executable, str(script), "run", "-e", "fake-spectral", "-t", "fake-tones",
            "--batch-size", "2", "--num-workers", "0", "--no-progress", "-o", str(out)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if wait:
        stdout, stderr = proc.communicate(timeout=120)
        return proc.returncode, stdout, stderr
    return proc


def _scores(out: Path) -> dict:
    (result_file,) = out.glob("run-*.json")
    r = json.loads(result_file.read_text())["results"][0]
    return {"scores": r["scores"], "skipped": r["skipped"], "n": r["n_clips"]}


def _cache_arrays(cache: Path) -> dict[str, list[np.ndarray]]:
    from safetensors import safe_open

    arrays: dict[str, np.ndarray] = {}
    for shard in cache.rglob("shard-*.safetensors"):
        with safe_open(str(shard), framework="numpy") as fh:
            for name in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                arrays[name] = fh.get_tensor(name)
    return arrays


def test_kill_9_then_rerun_redoes_only_missing_clips_and_matches(tmp_path):
    rc, _, _ = _run_cli(tmp_path, tmp_path / "cache-ref", tmp_path / "out-ref", 0.0)
    assert rc == 0
    proc = _run_cli(tmp_path, tmp_path / "cache", tmp_path / "out-killed", 0.4, wait=False)
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "cache").rglob("shard-*.safetensors")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    shards_before = list((tmp_path / "cache").rglob("shard-*.safetensors"))
    assert 1 <= len(shards_before) < 6, "kill should land mid-extraction"

    rc, _, stderr = _run_cli(tmp_path, tmp_path / "cache", tmp_path / "out-resumed", 0.0)
    assert rc == 0, stderr
    cached = int(stderr.split(" of 13 clips cached")[0].rsplit(" ", 1)[-1])
    assert 1 <= cached < 12  # a shard holds a batch of windows (1 s windows, clips 1-3 s)
    assert _scores(tmp_path / "out-resumed") == _scores(tmp_path / "out-ref")
    ref, resumed = _cache_arrays(tmp_path / "cache-ref"), _cache_arrays(tmp_path / "cache")
    assert ref.keys() == resumed.keys()
    for name in ref:
        np.testing.assert_array_equal(ref[name], resumed[name])


def test_dataset_revision_is_part_of_the_cache_key(tmp_path):
    clips = _clips(tmp_path)
    dirs = set()
    for revision in ("r1", "r2"):
        clips.dataset_revision = revision
        feats = extract(SpectralEncoder(), clips, tmp_path / "cache", device=CPU, num_workers=0,
                        show_progress=False, log=lambda m: None)
        dirs.add(feats.cache.dir)
    assert len(dirs) == 2


def test_ctrl_c_keeps_the_result_file_and_says_how_to_resume(tmp_path):
    proc = _run_cli(tmp_path, tmp_path / "cache", tmp_path / "out", 0.4, wait=False)
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "cache").rglob("shard-*.safetensors")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    (result_file,) = (tmp_path / "out").glob("run-*.json")
    assert f"`embench run --resume {result_file}` scores the rest" in stderr
    assert "Traceback" not in stderr
    assert json.loads(result_file.read_text())["provenance"]["finished_at"] is None
    env = {**os.environ, "DELAY": "0", "EMBENCH_CACHE": str(tmp_path / "cache"),
           "EMBENCH_DATA": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, str(tmp_path / "run_fake.py"), "run", "--resume",
                           str(result_file), "--no-progress"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "out").glob("run-*.json")] == [result_file.name]
    run = json.loads(result_file.read_text())
    assert len(run["results"]) == 1 and run["provenance"]["finished_at"]
    assert len(run["provenance"]["resumed_at"]) == 1
