"""``torchrun -m embench run`` shards extraction across processes (gloo on the CPU here): every
rank extracts its share into the one cache, rank 0 alone evaluates and writes the result, and
the scores equal a single-process run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embench import distributed
from embench.errors import EmbenchError


def _env(tmp_path: Path, cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "EMBENCH_DATA": str(tmp_path / "data"), "EMBENCH_CACHE": str(tmp_path / cache),
            "OMP_NUM_THREADS": "1"}


def _run(tmp_path: Path, launcher: list[str], cache: str, out: str):
    args = [*launcher, "run", "-e", "melspec", "-t", "toy-genres", "--seeds", "2",
            "--num-workers", "0", "--no-progress", "-o", str(tmp_path / out)]
    return subprocess.run(args, env=_env(tmp_path, cache), capture_output=True, text=True,
                          timeout=300)


def test_torchrun_two_ranks_shard_extraction_and_match_one_process(tmp_path):
    single = _run(tmp_path, [sys.executable, "-m", "embench"], "cache-single", "out-single")
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--standalone", "-m", "embench"]
    proc = _run(tmp_path, torchrun, "cache", "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # each rank extracted half of the 240 clips into the shared cache
    assert "extracting 120 (shard 0 of 2)" in proc.stderr
    assert "[rank 1] melspec: 0 of 240 clips cached, extracting 120 (shard 1 of 2)" in proc.stderr
    assert "all 240 clips cached" in proc.stderr  # rank 0 then read every shard
    (result_file,) = (tmp_path / "out").glob("run-*.json")  # only rank 0 writes results
    sharded = json.loads(result_file.read_text())
    (single_file,) = (tmp_path / "out-single").glob("run-*.json")
    reference = json.loads(single_file.read_text())
    assert sharded["spec"]["world_size"] == 2
    assert sharded["results"][0]["scores"] == reference["results"][0]["scores"]
    assert sharded["results"][0]["n_clips"] == reference["results"][0]["n_clips"]


def test_a_plain_process_is_rank_zero_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks, device = distributed.from_environment("auto")
    assert (ranks.rank, ranks.world_size, ranks.active, ranks.is_main) == (0, 1, False, True)
    assert device == "auto" and ranks.shard() is None
    assert ranks.gather_ok("boom") == ["boom"]
    assert ranks.failures("boom") == ["rank 0: boom"] and ranks.failures(None) == []


def test_world_size_without_rank_says_how_to_launch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(EmbenchError, match="torchrun --nproc-per-node"):
        distributed.from_environment("auto")


class _TwoRanks(distributed.Ranks):
    """Rank 0 of two, whose peer reports ``peer``'s route notes (no process group)."""

    def __init__(self, peer: list[str]):
        super().__init__(rank=0, world_size=2)
        object.__setattr__(self, "peer", peer)

    def gather(self, value):
        return [value, self.peer]


def test_route_choices_another_rank_made_differently_are_recorded():
    """Each rank times its own routes; rank 0's result keeps its own choices and, tagged, any
    other rank's that differ (not the same choice at another batch size or time)."""
    from types import SimpleNamespace

    from embench.runner import _record_routes

    ours = ["FFN first Linear + GELU: fused for 256 x [375, 768] bfloat16 (fused 1.0 ms, "
            "module 1.2 ms)", "positional conv: fft for 256 x [768, 375] bfloat16 (fft 0.3 ms)"]
    peer = ["FFN first Linear + GELU: fused for 200 x [375, 768] bfloat16 (fused 0.9 ms, "
            "module 1.1 ms)", "positional conv: pos for 256 x [768, 375] bfloat16 (pos 0.2 ms, "
            "fft 0.3 ms)"]
    encoder = SimpleNamespace(name="mert-v1-95m", loaded=True, route_notes=lambda: ours)
    result = SimpleNamespace(provenance=SimpleNamespace(kernel_routes={}))
    _record_routes(result, encoder, _TwoRanks(peer))
    assert result.provenance.kernel_routes == {"mert-v1-95m": [*ours, f"rank 1: {peer[1]}"]}
    _record_routes(result, encoder, distributed.Ranks())  # one process: its own notes, once
    assert len(result.provenance.kernel_routes["mert-v1-95m"]) == 3
