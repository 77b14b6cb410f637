"""`embench submit`: validate, copy under a stable name, rebuild; never a duplicate, never a
half-done submission."""

from __future__ import annotations

import json

import pytest

import embench.submit as submit_mod
from embench.errors import EmbenchError
from embench.leaderboard_build import check
from embench.results import PairFailure
from embench.submit import stable_name, submit_result
from tests.helpers_cli import run_main
from tests.leaderboard_fixtures import make_run, new_board, probe_result, write_run


def _results(board):
    return sorted(p.name for p in (board / "results").glob("*.json"))


def test_submit_copies_under_a_stable_name_and_rebuilds(tmp_path, capsys):
    board = new_board(tmp_path)
    src = write_run(tmp_path / "run-x.json", make_run([probe_result("melspec")]))
    assert run_main(["submit", str(src), "--leaderboard-dir", str(board)]) == 0
    out = capsys.readouterr().out
    assert _results(board) == ["melspec__toy-genres__20261127T100000Z-a1b2c3.json"]
    assert (board / "results" / _results(board)[0]).read_text() == src.read_text()
    assert "Submitted" in out and "pull request" in out and "index.html" in out
    assert check(board) == []
    assert "melspec" in (board / "README.md").read_text()


def test_same_run_twice_is_no_duplicate(tmp_path, capsys):
    board = new_board(tmp_path)
    run = make_run([probe_result("melspec")])
    src = write_run(tmp_path / "a.json", run)
    first = submit_result(src, board)
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(run.model_dump(mode="json")))  # same data, other formatting
    second = submit_result(copy, board)
    assert first.added and not second.added and second.path == first.path
    assert len(_results(board)) == 1
    assert run_main(["submit", str(src), "--leaderboard-dir", str(board)]) == 0
    assert "already on the leaderboard" in capsys.readouterr().out


def test_same_run_id_other_content_is_refused(tmp_path):
    board = new_board(tmp_path)
    submit_result(write_run(tmp_path / "a.json", make_run([probe_result("melspec")])), board)
    other = write_run(tmp_path / "b.json", make_run([probe_result("melspec", (1.0, 2.0))]))
    with pytest.raises(EmbenchError, match="already holds run '20261127T100000Z-a1b2c3'"):
        submit_result(other, board)
    assert len(_results(board)) == 1


def test_invalid_file_names_field_reason_and_what_to_do(tmp_path, capsys):
    board = new_board(tmp_path)
    data = make_run([probe_result("melspec")]).model_dump(mode="json")
    data["results"][0]["seeds"] = "three"
    del data["provenance"]["device"]
    src = tmp_path / "bad.json"
    src.write_text(json.dumps(data))
    assert run_main(["submit", str(src), "--leaderboard-dir", str(board)]) == 2
    err = capsys.readouterr().err
    assert "field results.0.seeds: Input should be a valid list" in err
    assert "field provenance.device: Field required" in err
    assert "submit again" in err
    assert _results(board) == [] and not (board / "README.md").exists()


def test_refuses_runs_without_measured_rows(tmp_path):
    board = new_board(tmp_path)
    fail = PairFailure(encoder="clap-music", task="gtzan", error_type="MissingWeightsError",
                       reason="not cached")
    only_failures = write_run(tmp_path / "f.json", make_run([], failures=[fail]))
    with pytest.raises(EmbenchError, match=r"no measured result \(only 1 failed pair"):
        submit_result(only_failures, board)
    paper = write_run(tmp_path / "p.json",
                      make_run([probe_result("x", reported=True, source="a paper")]))
    with pytest.raises(EmbenchError, match="embench/literature.py"):
        submit_result(paper, board)
    assert _results(board) == []


def test_missing_file_or_folder(tmp_path):
    with pytest.raises(EmbenchError, match="No result file"):
        submit_result(tmp_path / "nope.json", new_board(tmp_path))
    src = write_run(tmp_path / "a.json", make_run([probe_result("melspec")]))
    with pytest.raises(EmbenchError, match="No leaderboard folder"):
        submit_result(src, tmp_path / "elsewhere")


def test_failed_rebuild_takes_the_copy_back(tmp_path, monkeypatch):
    board = new_board(tmp_path)
    src = write_run(tmp_path / "a.json", make_run([probe_result("melspec")]))

    def broken(_board):
        raise EmbenchError("Plotting needs matplotlib")

    monkeypatch.setattr(submit_mod, "build", broken)
    with pytest.raises(EmbenchError, match="matplotlib"):
        submit_result(src, board)
    assert _results(board) == []


def test_stable_names():
    many = make_run([probe_result("a"), probe_result("b", task="t2")], run_id="r1")
    assert stable_name(many) == "2-encoders__2-tasks__r1.json"
    evil = make_run([probe_result("../../etc/passwd x")], run_id="../x y")
    name = stable_name(evil)
    assert "/" not in name and " " not in name and not name.startswith(".")
    assert name != stable_name(make_run([probe_result("../../etc/passwd x")], run_id="../x?y"))


def test_a_summary_that_its_seed_scores_do_not_give_is_refused(tmp_path):
    """A hand-edited mean would be ranked as if measured: refuse it, naming the field."""
    board = new_board(tmp_path)
    run = make_run([probe_result("melspec")])
    data = json.loads(run.model_dump_json())
    data["results"][0]["summary"]["accuracy"]["mean"] = 99.0
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    with pytest.raises(EmbenchError, match=r"summary\.accuracy\.mean: 99\.0 but the per-seed"):
        submit_result(edited, board)
    assert _results(board) == []
