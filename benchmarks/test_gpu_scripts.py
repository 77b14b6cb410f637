"""The GPU scripts run on the CPU with ``--quick`` (real-size models, tiny counts), so a script
broken by a change is found here, not after minutes of a lent GPU. No figure is checked: CPU
timings of GPU scripts mean nothing; only that each runs to its final table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embench_plugins.route_choice import ROUTE_VARIABLES

HERE = Path(__file__).resolve().parent

SCRIPTS = {  # script: (arguments, a line its last table must contain)
    "gpu.py": (["--encoders", "mert-v1-95m"], "| mert-v1-95m | fp32 |"),
    "gpu_variants.py": (["--encoders", "mert-v1-95m", "--compile"],
                        "| mert-v1-95m | bf16 | fused+layer+compile |"),
    "gpu_e2e.py": ([], "steady state"),
    "gpu_profile.py": ([], "decode threads=1"),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_gpu_script_runs_quick_on_the_cpu(script, tmp_path):
    args, expected = SCRIPTS[script]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    for variable in ROUTE_VARIABLES:
        env.pop(variable, None)
    done = subprocess.run([sys.executable, str(HERE / script), "--quick", *args],
                          capture_output=True, text=True, env=env, timeout=900,
                          cwd=HERE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]


@pytest.mark.slow
def test_gpu_session_script_runs_a_step_and_keeps_its_output(tmp_path):
    """``gpu_session.sh`` as a lent session runs it, with QUICK=1 (CPU, nothing installed): the
    whole-study step (``gpu_full_run.py``) through to its table, kept in $OUT."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path), "QUICK": "1",
           "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(HERE / "gpu_session.sh"), "full"], capture_output=True,
                          text=True, env=env, timeout=900, cwd=HERE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    kept = (tmp_path / "out" / "full.txt").read_text()
    assert "| melspec | musiccaps · frozen |" in kept and "== full: exit 0" in done.stdout
    wrong = subprocess.run(["bash", str(HERE / "gpu_session.sh"), "nope"], capture_output=True,
                           text=True, env=env, timeout=60, cwd=HERE.parent)
    assert wrong.returncode == 2 and "unknown step nope" in wrong.stdout
