"""Bad input to the CLI: one clear message, exit code 2, checked before any work starts (no
result file, no extraction), and nothing already computed lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers_cli import run_main

FAKE = ["run", "-e", "fake-spectral", "-t", "fake-tones", "--seeds", "1", "--no-progress",
        "--num-workers", "0"]


def _refused(capsys, args: list[str], *needles: str) -> str:
    """Run ``args``, expect exit 2 with each needle in stderr; returns stderr."""
    assert run_main(args) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("flag", "value", "kind"), [
    ("-e", "", "encoder"), ("-e", ",", "encoder"), ("-e", " , ", "encoder"),
    ("-t", "", "task"), ("-t", ",", "task"),
])
def test_empty_encoder_or_task_list_is_refused(tmp_path, capsys, fake_plugin, flag, value, kind):
    out = tmp_path / "out"
    args = [*FAKE, "-o", str(out)]
    args[args.index(flag) + 1] = value
    option = "--encoders" if kind == "encoder" else "--tasks"
    _refused(capsys, args, f"{option} is empty: give {kind} names or 'all'", "embench list")
    assert not out.exists()  # nothing ran, no empty result file


@pytest.mark.parametrize("flag", ["--frame-rate", "--window-s", "--hop-s"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1"])
def test_non_finite_or_non_positive_numbers_are_refused(tmp_path, capsys, fake_plugin, flag,
                                                        value):
    out = tmp_path / "out"
    _refused(capsys, [*FAKE, "-o", str(out), flag, value], flag, "finite number greater than 0")
    assert not out.exists()


def test_hop_longer_than_window_is_refused(tmp_path, capsys, fake_plugin):
    out = tmp_path / "out"
    _refused(capsys, [*FAKE, "-o", str(out), "--window-s", "0.5", "--hop-s", "0.75"],
             "--hop-s 0.75 is longer than fake-spectral's window (0.5 s)", "hop <= the window")
    # without --window-s the encoder's own window (1 s for fake-spectral) is the limit
    _refused(capsys, [*FAKE, "-o", str(out), "--hop-s", "2"],
             "--hop-s 2 is longer than fake-spectral's window (1 s)")
    assert not out.exists()


@pytest.mark.parametrize("device", ["mps", "xpu", "xpu:0", "mps:0"])
def test_device_missing_from_this_torch_build_is_refused(tmp_path, capsys, fake_plugin, device):
    import torch

    kind = device.split(":")[0]
    usable = (torch.backends.mps.is_available() if kind == "mps"
              else hasattr(torch, "xpu") and torch.xpu.is_available())
    if usable:
        pytest.skip(f"this torch has {kind}")
    out = tmp_path / "out"
    _refused(capsys, [*FAKE, "-o", str(out), "--device", device],
             f"--device {device} is not available in this torch build (torch "
             f"{torch.__version__}); use auto or cpu")
    assert not out.exists()


def test_meta_device_is_refused(tmp_path, capsys, fake_plugin):
    out = tmp_path / "out"
    _refused(capsys, [*FAKE, "-o", str(out), "--device", "meta"], "--device meta",
             "use auto, cpu or cuda")
    assert not out.exists()


def test_cuda_index_beyond_the_gpus_is_refused(tmp_path, capsys, fake_plugin, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    _refused(capsys, [*FAKE, "-o", str(tmp_path / "out"), "--device", "cuda:2"],
             "torch sees 2 GPU(s)")


@pytest.mark.parametrize("seeds", ["2,", ",2", "1,,2", "1, ,2"])
def test_seed_list_with_an_empty_item_is_refused(capsys, fake_plugin, seeds):
    _refused(capsys, [*FAKE, "--seeds", seeds], "--seeds", "empty item")


def test_captioner_folder_without_a_saved_model_is_refused(tmp_path, capsys, fake_plugin):
    empty = tmp_path / "my-t5"
    empty.mkdir()
    out = tmp_path / "out"
    _refused(capsys, [*FAKE, "-o", str(out), "--captioner", str(empty)],
             f"{empty} holds no model saved with save_pretrained (no config.json); give such "
             f"a folder, a hub id, or 'scratch'")
    assert not out.exists()


def test_captioner_folder_with_config_json_is_accepted(tmp_path):
    from embench.cli_checks import check_captioner

    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert check_captioner(str(folder)) == str(folder.resolve())
    assert check_captioner("scratch") == "scratch"
    assert check_captioner("t5-small") == "t5-small"


@pytest.mark.parametrize(("env", "option"), [("EMBENCH_DATA", "--data-dir"),
                                              ("EMBENCH_CACHE", "--cache-dir")])
def test_a_file_from_the_environment_is_named_as_such(tmp_path, capsys, fake_plugin,
                                                      monkeypatch, env, option):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    monkeypatch.setenv(env, str(blocker))
    err = _refused(capsys, [*FAKE, "-o", str(tmp_path / "out")], env, str(blocker))
    monkeypatch.delenv(env)
    assert run_main([*FAKE, "-o", str(tmp_path / "out"), option, str(blocker)]) == 2
    from_flag = capsys.readouterr().err
    assert str(blocker) in from_flag and "EMBENCH_DATA=" not in from_flag
    assert not (tmp_path / "out").exists()
    assert "is a file" in err


def test_cache_under_a_file_is_refused_up_front(tmp_path, capsys, fake_plugin, monkeypatch):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    cache = blocker / "sub"
    monkeypatch.setenv("EMBENCH_CACHE", str(cache))
    out = tmp_path / "out"
    _refused(capsys, [*FAKE, "-o", str(out)],
             f"cannot write the embedding cache at {cache} (is under {blocker}, which is a file",
             "EMBENCH_CACHE); choose --cache-dir or EMBENCH_CACHE")
    assert not out.exists()


def test_cache_that_refuses_writes_is_refused_up_front(tmp_path, capsys, fake_plugin,
                                                       monkeypatch):
    """A read-only cache folder (chmod does not stop root, so the write is made to fail)."""
    import tempfile

    def no_write(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    cache = tmp_path / "ro-cache"
    monkeypatch.setattr(tempfile, "mkstemp", no_write)
    out = tmp_path / "out"
    _refused(capsys, [*FAKE, "-o", str(out), "--cache-dir", str(cache)],
             f"cannot write the embedding cache at {cache} (Permission denied); choose "
             f"--cache-dir or EMBENCH_CACHE")
    assert not out.exists()


def test_data_dir_under_a_file_is_refused(tmp_path, capsys, fake_plugin, monkeypatch):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EMBENCH_DATA", str(blocker / "data"))
    _refused(capsys, [*FAKE, "-o", str(tmp_path / "out")],
             f"EMBENCH_DATA={blocker / 'data'} is under {blocker}, which is a file")
    assert run_main(["data", "musiccaps", "--data-dir", str(blocker / "data")]) == 2
    assert "which is a file" in capsys.readouterr().err


def test_data_dir_is_not_created_or_written_by_the_check(tmp_path, monkeypatch):
    """A read-only data folder that holds the data must keep working: the check only looks."""
    import click

    from embench.cli import run
    from embench.cli_checks import check_data_dir

    data = tmp_path / "data"
    with click.Context(run) as ctx:
        assert check_data_dir(ctx, next(p for p in run.params if p.name == "data_dir"),
                               str(data)) == str(data)
    assert not data.exists()


def _good_run_file(tmp_path):
    from tests.leaderboard_fixtures import make_run, probe_result

    path = tmp_path / "run-good.json"
    path.write_text(make_run([probe_result()]).model_dump_json())
    return path


def test_leaderboard_output_under_a_file(tmp_path, capsys):
    good = _good_run_file(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    target = blocker / "x.md"
    _refused(capsys, ["leaderboard", str(good), "-o", str(target)],
             f"cannot write {target}: {blocker} is a file; choose another -o")
    assert run_main(["leaderboard", str(good), "-o", str(tmp_path / "board" / "x.md")]) == 0


def test_plot_output_under_a_file(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    good = _good_run_file(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    target = blocker / "plots"
    _refused(capsys, ["plot", str(good), "-o", str(target)],
             f"cannot write {target} (is under {blocker}, which is a file); choose another -o")
    _refused(capsys, ["plot", str(good), "-o", str(blocker)], "is a file")  # click's own check


def test_one_seed_shows_no_confidence_interval(tmp_path, capsys, fake_plugin, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich folds the table to the terminal's width
    from embench.results import ScoreSummary
    from embench.run_summary import score_cell

    assert score_cell("accuracy", ScoreSummary.from_values([68.75])) == \
        "accuracy 68.75 (1 seed: no CI)"
    assert score_cell("accuracy", ScoreSummary.from_values([60.0, 70.0])).startswith(
        "accuracy 65.00 ± ")
    assert run_main([*FAKE, "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "no CI" in out and "± 0.00" not in out


def test_a_damaged_result_file_in_the_output_folder_costs_the_run_nothing(tmp_path, capsys,
                                                                           fake_plugin):
    """The run scores, writes its result, renders the folder's leaderboard without the damaged
    file (naming it), and exits with its own pairs' code."""
    out = tmp_path / "out"
    assert run_main([*FAKE, "-o", str(out)]) == 0
    (first,) = out.glob("run-*.json")
    damaged = out / "run-20260101T000000Z-aaaaaa.json"
    damaged.write_text(first.read_text()[:500])
    capsys.readouterr()
    assert run_main([*FAKE, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"left {damaged} out of the leaderboard" in err and "not valid JSON" in err
    board = (out / "leaderboard.md").read_text()
    assert board.count("fake-spectral") >= 1
    assert run_main(["leaderboard", str(out)]) == 2  # asked for explicitly, it is still an error


def _two_pair_run(tmp_path, capsys) -> tuple[Path, dict]:
    out = tmp_path / "out"
    assert run_main(["run", "-e", "fake-spectral,melspec", "-t", "fake-tones", "--seeds", "1",
                     "--no-progress", "--num-workers", "0", "-o", str(out)]) == 0
    capsys.readouterr()
    (path,) = out.glob("run-*.json")
    return path, json.loads(path.read_text())


def test_resume_scores_only_the_pairs_a_run_lacks(tmp_path, capsys, fake_plugin):
    path, full = _two_pair_run(tmp_path, capsys)
    cut = {**full, "results": full["results"][:1],
           "provenance": {**full["provenance"], "finished_at": None}}  # as if stopped there
    path.write_text(json.dumps(cut))
    assert run_main(["run", "--resume", str(path), "--no-progress"]) == 0
    assert "resuming run" in capsys.readouterr().err
    run = json.loads(path.read_text())
    assert [r["encoder"] for r in run["results"]] == ["fake-spectral", "melspec"]
    assert run["results"][0] == full["results"][0]  # kept as it was, not scored again
    assert run["run_id"] == full["run_id"] and run["provenance"]["resumed_at"]
    assert list(path.parent.glob("run-*.json")) == [path]


def test_resume_refuses_other_settings_and_another_version(tmp_path, capsys, fake_plugin):
    path, full = _two_pair_run(tmp_path, capsys)
    _refused(capsys, ["run", "--resume", str(path), "--seeds", "5"],
             "--resume continues the run with the settings it was started with; drop --seeds")
    path.write_text(json.dumps({**full, "provenance": {**full["provenance"],
                                                       "embench_version": "0.0.1"}}))
    _refused(capsys, ["run", "--resume", str(path)], "written by embench 0.0.1",
             "one run must not mix scores of two versions")


def test_skipped_clips_are_named_with_their_reason(tmp_path, capsys, fake_plugin):
    assert run_main([*FAKE, "-o", str(tmp_path / "out")]) == 0  # fake-tones has a corrupt clip
    err = capsys.readouterr().err
    assert "fake-spectral on fake-tones: 1 clip(s) skipped - broken: " in err
    assert "all are in " in err


def test_leaderboard_of_a_folder_without_results_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _refused(capsys, ["leaderboard", str(tmp_path / "empty"), "-o", str(tmp_path / "x.md")],
             "Nothing to render: no usable embench result file in")
    assert not (tmp_path / "x.md").exists()
