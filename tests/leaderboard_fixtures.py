"""Realistic run results for the published-leaderboard tests, built through the pydantic
models exactly as ``embench run`` writes them (probe details with per-layer validation curves,
baselines, provenance), so no test depends on a measured result being committed."""

from __future__ import annotations

import json
from pathlib import Path

from embench.results import (
    PairFailure,
    Preprocessing,
    Provenance,
    RunResult,
    ScoreSummary,
    TaskResult,
)

CURVES = {"melspec": [55.0, 61.0, 58.0], "mert-v1-95m": [60.0, 71.0, 74.0]}


def probe_result(encoder: str = "melspec", values: tuple[float, ...] = (69.4, 72.1, 66.8),
                 **kw) -> TaskResult:
    """A toy-genres probe result with what classification.py stores in its details."""
    seeds = list(range(len(values)))
    curve = CURVES.get(encoder, [50.0, 52.0, 51.0])
    fields = dict(
        encoder=encoder, task="toy-genres", task_version="1", dataset_id="embench/toy-genres",
        protocol="probe", split_id="toy-genres-v1-fixed", main_score="accuracy", seeds=seeds,
        scores={"accuracy": list(values), "macro_f1": [v - 2 for v in values]},
        summary={"accuracy": ScoreSummary.from_values(list(values)),
                 "macro_f1": ScoreSummary.from_values([v - 2 for v in values])},
        train_scores={"accuracy": [99.0] * len(values)},
        baselines={"chance": 16.666666666666668, "majority": 16.666666666666668},
        n_clips={"train": 144, "valid": 48, "test": 48},
        preprocessing=Preprocessing(sample_rate=16000, window_s=None, hop_s=None,
                                    frame_rate=1.0, compute_dtype="float32"),
        details={
            "probe": "mlp", "units": "percent", "labels": ["a", "b"], "num_layers": len(curve),
            "seeds": [{"seed": s, "layer": 2, "lr": 1e-3, "epoch": 7,
                       "valid_accuracy": max(curve),
                       "valid_accuracy_by_layer": [c + s for c in curve],
                       "valid_accuracy_weighted_sum": max(curve) - 1.0,
                       "layer_weights": None, "confusion_matrix": [[1, 0], [0, 1]]}
                      for s in seeds],
        },
    )
    fields.update(kw)
    return TaskResult(**fields)


def make_run(results: list[TaskResult], run_id: str = "20261127T100000Z-a1b2c3",
             version: str = "0.1.0", started: str = "2026-11-27T10:00:00Z",
             failures: list[PairFailure] | None = None) -> RunResult:
    prov = Provenance(embench_version=version, git_commit="0123456789abcdef", python="3.11.2",
                      torch="2.13.0", platform="Linux-x86_64", device="cpu",
                      started_at=started, finished_at=started,
                      command_line=["embench", "run", "--seeds", "3"])
    return RunResult(run_id=run_id, provenance=prov, results=results, failures=failures or [])


def write_run(path: Path, run: RunResult) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.model_dump(mode="json"), indent=2), encoding="utf-8")
    return path


def new_board(root: Path) -> Path:
    """An empty leaderboard folder, as the repository ships it."""
    board = root / "leaderboard"
    (board / "results").mkdir(parents=True)
    (board / "results" / ".gitkeep").write_text("")
    return board
