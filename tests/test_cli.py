"""The command line: exit codes, messages that say what to do, JSON output, failing pairs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from embench import MissingWeightsError, hookimpl, plugins
from tests.fakes import SpectralEncoder
from tests.helpers_cli import run_main


def test_unknown_encoder_exit_2_with_did_you_mean_and_no_traceback(capsys):
    assert run_main(["run", "--encoders", "melspek"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'melspec'" in err and "Traceback" not in err


def test_unknown_task_lists_available(capsys, fake_plugin):
    assert run_main(["run", "-e", "fake-spectral", "-t", "fake-tone"]) == 2
    err = capsys.readouterr().err
    assert "Unknown task 'fake-tone'" in err and "fake-tones" in err


def test_unknown_protocol_is_a_usage_error(capsys, fake_plugin):
    assert run_main(["run", "-e", "fake-spectral", "-t", "fake-tones", "-p", "prob"]) == 2
    err = capsys.readouterr().err
    assert "Unknown protocol 'prob' for task 'fake-tones'." in err
    assert "Available protocols: centroid" in err


def test_debug_env_shows_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "embench", "run", "-e", "nope"],
                          capture_output=True, text=True, env={**_env(tmp_path),
                                                               "EMBENCH_DEBUG": "1"})
    assert proc.returncode == 2 and "Traceback" in proc.stderr  # the error's own exit code
    assert "UnknownNameError" in proc.stderr


def _env(tmp_path):
    import os

    return {**os.environ, "EMBENCH_DATA": str(tmp_path / "d"), "EMBENCH_CACHE": str(tmp_path)}


def test_plugins_json(capsys):
    assert run_main(["plugins", "--json"]) == 0
    rows = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert rows["melspec"]["encoders"] == ["melspec"] and rows["melspec"]["version"]


def test_plugins_text_shows_conflicts(capsys, fake_plugin):
    from tests.fakes import FakePlugin

    plugins.register_plugin(FakePlugin(), name="copycat")
    assert run_main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "fake 0" not in out and "CONFLICT" in out and "'copycat'" in out
    assert run_main(["run", "-e", "fake-spectral", "-t", "fake-tones"]) == 2
    capsys.readouterr()
    assert run_main(["list"]) == 0  # listing still works, and says what is wrong
    assert "CONFLICT" in capsys.readouterr().out


def test_a_protocol_missing_from_requires_features_is_explained(capsys, monkeypatch):
    """The task reads ctx.features, which the core leaves None for protocols not declared as
    reading embeddings: the message names the field to fix, not just the AttributeError."""
    from dataclasses import replace

    from tests.fakes import FakePlugin, ToneTask

    task = ToneTask()
    task.info = replace(task.info, requires_features=())
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "")
    plugins.register_plugin(FakePlugin(task=task), name="fake")
    assert run_main(["run", "-e", "fake-spectral", "-t", "fake-tones", "--seeds", "1",
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "protocol 'centroid'" in err and "TaskInfo.requires_features" in err


def test_list_json(capsys, fake_plugin):
    assert run_main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["encoders"]["fake-spectral"]["sample_rate"] == 16000
    assert data["tasks"]["fake-tones"]["main_score"] == "accuracy"


@pytest.mark.parametrize("seeds", ["0", "x", "1,1"])
def test_bad_seeds(capsys, seeds):
    assert run_main(["run", "--seeds", seeds]) == 2
    assert "--seeds" in capsys.readouterr().err


class _OfflineEncoder(SpectralEncoder):
    info = SpectralEncoder.info.__class__(**{**SpectralEncoder.info.as_dict(),
                                             "name": "needs-weights"})

    def load(self, device, weights="pretrained", weights_path=None):
        raise MissingWeightsError("weights for org/model are not cached; run `huggingface-cli "
                                  "download org/model` on a machine with network")


def test_failing_pair_is_recorded_and_others_still_run(tmp_path, capsys, fake_plugin):
    class Offline:
        @hookimpl
        def register_encoders(self, register):
            register(_OfflineEncoder())

    plugins.register_plugin(Offline(), name="offline")
    out = tmp_path / "out"
    code = run_main(["run", "-e", "needs-weights,fake-spectral", "-t", "fake-tones", "--seeds", "2",
                  "--no-progress", "--num-workers", "0", "-o", str(out)])
    assert code == 1
    (result_file,) = out.glob("run-*.json")
    result = json.loads(result_file.read_text())
    assert [r["encoder"] for r in result["results"]] == ["fake-spectral"]
    (failure,) = result["failures"]
    assert failure["encoder"] == "needs-weights" and failure["error_type"] == "MissingWeightsError"
    assert "huggingface-cli download" in failure["reason"]
    board = (out / "leaderboard.md").read_text()
    assert "fake-spectral" in board and "needs-weights" in board
    assert "1 pair(s) failed" in capsys.readouterr().err


def test_result_json_has_provenance_and_summary(tmp_path, fake_plugin, monkeypatch, capsys):
    monkeypatch.setenv("EMBENCH_UNFOLD_CONV", "pos")  # a kernel route: recorded
    monkeypatch.setenv("NOT_EMBENCH", "x")  # anything else: not
    note = "CNN feature encoder: fused for 8 x [16000] bfloat16 (fused 1.00 ms, module 2.00 ms)"
    monkeypatch.setattr(SpectralEncoder, "route_notes", lambda self: [note], raising=False)
    out = tmp_path / "out"
    assert run_main(["run", "-e", "fake-spectral", "-t", "fake-tones", "--seeds", "0,7",
                  "--no-progress", "--num-workers", "0", "-o", str(out)]) == 0
    from embench.results import RunResult

    (result_file,) = out.glob("run-*.json")
    run = RunResult.model_validate_json(result_file.read_text())
    assert run.schema_version == "1.1" and run.provenance.finished_at
    assert run.provenance.torch and run.provenance.python and run.provenance.device
    assert run.provenance.environment.get("EMBENCH_UNFOLD_CONV") == "pos"
    assert "NOT_EMBENCH" not in run.provenance.environment
    assert run.provenance.kernel_routes == {"fake-spectral": [note]}  # once, though 2 seeds
    assert f"fake-spectral: {note}" in capsys.readouterr().err  # extraction logged it
    (r,) = run.results
    assert r.seeds == [0, 7] and r.split_id == "tones-fixed" and r.main.n == 2
    assert r.skipped[0].clip_id == "broken" and r.preprocessing.sample_rate == 16000
    assert r.n_clips == {"train": 6, "valid": 2, "test": 4}


def test_result_says_how_long_extraction_took(tmp_path):
    """``extract_s`` covers the encoder's forwards (each sleeps 0.05 s here) and is part of
    ``duration_s``; a re-run still reports it (reading the cache)."""
    from embench.results import RunResult
    from tests.fakes import FakePlugin

    encoder = SpectralEncoder(delay_s=0.05)
    plugins.register_plugin(FakePlugin(encoder=encoder), name="slow")
    try:
        def pair(out):
            assert run_main(["run", "-e", "fake-spectral", "-t", "fake-tones", "--seeds", "1",
                             "--no-progress", "--num-workers", "0", "-o", str(out),
                             "--cache-dir", str(tmp_path / "cache")]) == 0
            (result_file,) = out.glob("run-*.json")
            (r,) = RunResult.model_validate_json(result_file.read_text()).results
            return r

        first = pair(tmp_path / "first")
        assert 0.05 <= first.extract_s <= first.duration_s
        from embench.run_summary import pair_time  # the summary table's "time" column

        assert pair_time(first) == f"{first.duration_s:.1f} s ({first.extract_s:.1f} s extracting)"
        assert pair_time(first.model_copy(update={"duration_s": 125.4, "extract_s": 0.01})) \
            == "125 s"
        loads = encoder.load_calls
        again = pair(tmp_path / "again")  # all cached: the encoder is not even loaded
        assert encoder.load_calls == loads and 0 <= again.extract_s <= again.duration_s
    finally:
        plugins.unregister_plugin("slow")


def test_captioner_flag_reaches_the_task_and_the_result(tmp_path, monkeypatch):
    """``--captioner`` is checked before anything runs, then handed to every task's context
    and recorded in the run's spec."""
    from embench.results import RunResult
    from tests.fakes import FakePlugin, ToneTask

    seen = []

    class RecordingTask(ToneTask):
        def evaluate(self, ctx):
            seen.append(ctx.captioner)
            return super().evaluate(ctx)

    plugins.register_plugin(FakePlugin(task=RecordingTask()), name="recording")
    try:
        out, folder = tmp_path / "out", tmp_path / "my-t5"
        folder.mkdir()
        (folder / "config.json").write_text("{}")  # what save_pretrained leaves
        monkeypatch.chdir(tmp_path)
        assert run_main(["run", "-e", "fake-spectral", "-t", "fake-tones", "--seeds", "1",
                         "--no-progress", "--num-workers", "0", "-o", str(out),
                         "--captioner", "./my-t5"]) == 0
        (result_file,) = out.glob("run-*.json")
        assert RunResult.model_validate_json(result_file.read_text()).spec.captioner == str(folder)
        assert seen == [str(folder)]  # a relative folder arrives as an absolute path
        assert run_main(["run", "-e", "fake-spectral", "-t", "fake-tones", "--seeds", "1",
                         "--no-progress", "-o", str(out), "--captioner", "./missing"]) == 2
        assert seen == [str(folder)]  # refused before any work
    finally:
        plugins.unregister_plugin("recording")


def test_unwritable_output_dir_is_a_clear_error(tmp_path, capsys, fake_plugin):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run_main(["run", "-e", "fake-spectral", "-t", "fake-tones", "-o",
                  str(blocker / "out")]) == 2
    assert "Choose a writable folder with --output-dir" in capsys.readouterr().err


def test_leaderboard_without_results_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_main(["leaderboard"]) == 2
    assert "run `embench run` first" in capsys.readouterr().err


def test_cuda_on_a_machine_without_gpu(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_main(["run", "--device", "cuda"]) == 2
    assert "Use --device cpu" in capsys.readouterr().err
    assert run_main(["run", "--device", "tpu9"]) == 2
    assert "is not a device" in capsys.readouterr().err


def test_window_and_hop_override_reach_cache_key_and_results(tmp_path, fake_plugin):
    out = tmp_path / "out"
    args = ["run", "-e", "fake-spectral", "-t", "fake-tones", "--seeds", "1", "--no-progress",
            "--num-workers", "0", "-o", str(out)]
    assert run_main(args) == 0
    assert run_main([*args, "--window-s", "0.5", "--hop-s", "0.25"]) == 0
    from embench.results import RunResult

    runs = [RunResult.model_validate_json(p.read_text()) for p in out.glob("run-*.json")]
    runs.sort(key=lambda r: r.spec.window_s is not None)
    default, custom = (r.results[0].preprocessing for r in runs)
    assert (default.window_s, default.hop_s) == (1.0, 1.0)
    assert (custom.window_s, custom.hop_s) == (0.5, 0.25)
    assert default.cache_key != custom.cache_key
    assert fake_plugin.encoder.info.window_s == 1.0  # the registered encoder is untouched


def test_window_shorter_than_encoder_minimum(capsys, fake_plugin):
    assert run_main(["run", "-e", "fake-spectral", "-t", "fake-tones", "--window-s", "0.01"]) == 2
    assert "shorter than fake-spectral accepts" in capsys.readouterr().err
