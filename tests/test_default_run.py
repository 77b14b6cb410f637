"""The README's main command, `embench run` with no flags, end to end in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_default_run_scores_toy_suite_above_baselines(tmp_path):
    env = {**os.environ, "EMBENCH_DATA": str(tmp_path / "data"),
           "EMBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "embench", "run", "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (result_file,) = (tmp_path / "embench-results").glob("run-*.json")
    results = {r["task"]: r for r in json.loads(result_file.read_text())["results"]}
    genres, captions = results["toy-genres"], results["toy-captions"]
    assert genres["encoder"] == captions["encoder"] == "melspec"
    assert genres["protocol"] == "probe" and genres["seeds"] == [0, 1, 2]
    acc = genres["summary"]["accuracy"]
    assert acc["ci95_low"] > max(genres["baselines"].values())
    chosen = [seed["layer"] for seed in genres["details"]["seeds"]]
    assert len(chosen) == 3 and all(len(s["valid_accuracy_by_layer"]) == 3
                                    for s in genres["details"]["seeds"])
    bleu = captions["summary"]["bleu4"]["mean"]
    assert bleu > captions["baselines"]["constant-caption"]
    assert "does-not-beat-constant-caption" not in captions["flags"]
    board = (tmp_path / "embench-results" / "leaderboard.md").read_text()
    assert "toy-genres · probe" in board and "toy-captions · captioner" in board
    jsonl = list((tmp_path / "embench-results").rglob("captions-seed*.jsonl"))
    assert jsonl and all(json.loads(line)["hypothesis"] for line in jsonl[0].open())
    # the second identical run reuses every cached embedding
    again = subprocess.run([sys.executable, "-m", "embench", "run", "--no-progress"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "extracting" not in again.stderr
    assert again.stderr.count("all 240 clips cached") == 2
