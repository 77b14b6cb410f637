"""Bad result files and leaderboard folders: each gets a coherent error (or a named warning)
that says what to do next, and `embench leaderboard` and `embench submit` agree on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embench import __version__
from embench.errors import EmbenchError
from embench.result_files import load_results
from embench.results import SCHEMA_VERSION, ScoreSummary
from embench.submit import submit_result
from tests.helpers_cli import run_main
from tests.leaderboard_fixtures import make_run, new_board, probe_result, write_run

OURS = SCHEMA_VERSION.split(".")[0]


def _data(**kw) -> dict:
    return make_run([probe_result("melspec", **kw)]).model_dump(mode="json")


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _results(board: Path) -> list[str]:
    return sorted(p.name for p in (board / "results").glob("*.json"))


# ------------------------------------------------------------------ 2. schema version message


def _both_commands(tmp_path: Path, path: Path, capsys) -> list[str]:
    """The error `embench leaderboard` and `embench submit` print for ``path``."""
    messages = []
    assert run_main(["leaderboard", str(path)]) == 2
    messages.append(capsys.readouterr().err)
    board = new_board(tmp_path)
    assert run_main(["submit", str(path), "--leaderboard-dir", str(board)]) == 2
    messages.append(capsys.readouterr().err)
    assert _results(board) == []
    return messages


def test_newer_schema_claimed_by_this_very_release_is_called_edited(tmp_path, capsys):
    data = _data()
    data["schema_version"] = "9.0"
    assert data["provenance"]["embench_version"] == __version__
    path = _write(tmp_path / "run-9.json", data)
    for err in _both_commands(tmp_path, path, capsys):
        assert str(path) in err and "'9.0'" in err and f"reads schema {OURS}.x" in err
        assert f"embench {__version__} writes schema {OURS}.x" in err
        assert "edited" in err and "rerun `embench run`" in err
        # not the old self-contradiction "written by X; render it with X"
        assert f"render it with embench {__version__}" not in err


def test_newer_schema_from_a_newer_release_says_upgrade(tmp_path, capsys):
    data = _data()
    data["schema_version"] = "9.0"
    data["provenance"]["embench_version"] = "9.9.9"
    path = _write(tmp_path / "future.json", data)
    for err in _both_commands(tmp_path, path, capsys):
        assert "newer than this release reads" in err and "embench 9.9.9" in err
        assert "Upgrade embench to a release that reads schema 9.x" in err
        assert "edited" not in err


def test_older_schema_says_which_release_reads_it(tmp_path):
    data = _data()
    data["schema_version"] = "0.3"
    data["provenance"]["embench_version"] = "0.0.1"
    path = _write(tmp_path / "old.json", data)
    with pytest.raises(EmbenchError) as info:
        load_results([path])
    msg = str(info.value)
    assert "older than this release reads" in msg and "embench 0.0.1" in msg
    assert "schema 0.x" in msg


def test_schema_version_that_is_no_version(tmp_path):
    data = _data()
    data["schema_version"] = "latest"
    with pytest.raises(EmbenchError, match="no schema version any embench release writes"):
        load_results([_write(tmp_path / "odd.json", data)])


# ------------------------------------------------- 3. the leaderboard checks summaries too


def _nan_seeds(tmp_path: Path, name: str = "edited.json") -> Path:
    """Per-seed scores set to NaN by hand; the summary still shows the measured mean."""
    data = _data()
    data["results"][0]["scores"]["accuracy"] = [float("nan")] * 3
    return _write(tmp_path / name, data)


def test_leaderboard_leaves_out_a_file_whose_seed_scores_were_edited(tmp_path, capsys):
    edited = _nan_seeds(tmp_path / "runs")
    good = make_run([probe_result("mert-v1-95m", (80.0, 82.0))], run_id="good-run")
    write_run(tmp_path / "runs" / "good.json", good)
    assert run_main(["leaderboard", str(tmp_path / "runs")]) == 0
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[1] for row in rows[1:]] == ["mert-v1-95m"]
    assert "69.43" not in captured.out
    assert f"left {edited} out of the leaderboard" in captured.err
    assert "summary.accuracy.mean" in captured.err and "edited after the run" in captured.err
    assert "rerun the run" in captured.err


def test_leaderboard_explicit_edited_file_and_submit_agree(tmp_path, capsys):
    edited = _nan_seeds(tmp_path)
    warnings: list[str] = []
    assert load_results([edited], warn=warnings.append) == []
    assert len(warnings) == 1 and str(edited) in warnings[0]
    with pytest.raises(EmbenchError, match="edited after the run"):
        submit_result(edited, new_board(tmp_path))
    assert run_main(["leaderboard", str(edited), "-o", str(tmp_path / "lb.md")]) == 2
    assert not (tmp_path / "lb.md").exists()  # nothing left to render is refused
    err = capsys.readouterr().err
    assert "edited after the run" in err and "Nothing to render" in err


def test_leaderboard_keeps_consistent_files(tmp_path):
    """A run whose seeds really gave NaN, and a literature row with no per-seed scores, are
    what their files say: no warning."""
    nan = [float("nan")] * 2
    measured = probe_result("melspec", values=(0.5, 0.6), scores={"accuracy": nan},
                            summary={"accuracy": ScoreSummary.from_values(nan)})
    paper = probe_result("paper", reported=True, source="A paper", scores={},
                         summary={"accuracy": ScoreSummary(mean=77.0, std=0.0, ci95_low=77.0,
                                                           ci95_high=77.0, n=1)})
    path = write_run(tmp_path / "ok.json", make_run([measured, paper]))
    warnings: list[str] = []
    runs = load_results([path], warn=warnings.append)
    assert warnings == [] and len(runs) == 1 and len(runs[0].results) == 2


# ------------------------------------------------ 4. submit only into a leaderboard folder


def test_submit_refuses_an_empty_folder(tmp_path, capsys):
    src = write_run(tmp_path / "good.json", make_run([probe_result("melspec")]))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_main(["submit", str(src), "--leaderboard-dir", str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"{empty} does not look like an embench leaderboard folder" in err
    assert "holds results/" in err and "README.md, index.html and charts/" in err
    assert f"mkdir {empty / 'results'}" in err
    assert list(empty.iterdir()) == []  # nothing written


def test_submit_refuses_a_folder_with_someone_elses_readme(tmp_path):
    src = write_run(tmp_path / "good.json", make_run([probe_result("melspec")]))
    other = tmp_path / "project"
    other.mkdir()
    (other / "README.md").write_text("# My project\n")
    with pytest.raises(EmbenchError, match="does not look like an embench leaderboard"):
        submit_result(src, other)
    assert sorted(p.name for p in other.iterdir()) == ["README.md"]


def test_submit_into_a_deliberately_started_or_existing_leaderboard(tmp_path):
    src = write_run(tmp_path / "good.json", make_run([probe_result("melspec")]))
    started = tmp_path / "new-board"
    (started / "results").mkdir(parents=True)  # what the refusal tells you to do
    assert submit_result(src, started).added
    assert (started / "README.md").is_file() and (started / "index.html").is_file()
    # a leaderboard whose empty results/ git dropped is still recognised by its README
    rebuilt = tmp_path / "cloned"
    rebuilt.mkdir()
    (rebuilt / "README.md").write_text((started / "README.md").read_text(encoding="utf-8"),
                                       encoding="utf-8")
    assert submit_result(src, rebuilt).added
    assert _results(rebuilt) == _results(started)


def test_a_file_from_a_newer_minor_schema_says_to_upgrade(tmp_path):
    """A release that reads schema 1.1 meets a 1.2 file with a field it does not know."""
    path = write_run(tmp_path / "run.json", make_run([probe_result("melspec")]))
    data = json.loads(path.read_text())
    major, minor = SCHEMA_VERSION.split(".")
    data["schema_version"] = f"{major}.{int(minor) + 1}"
    data["results"][0]["something_new"] = [1, 2]
    path.write_text(json.dumps(data))
    with pytest.raises(EmbenchError, match=r"something_new: Extra inputs are not permitted\. Its "
                                           r"schema 1\.\d+ is newer .* upgrade embench"):
        load_results([path])
