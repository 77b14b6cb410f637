"""The example third-party plugin, installed the way a user installs one, seen through the CLI.

Why subprocesses and a real ``pip install``: entry-point discovery reads installed distribution
metadata, so the only honest test of "a pip-installed package shows up in embench" is to install
one (into a throwaway ``--target`` folder put on ``PYTHONPATH``) and ask a fresh interpreter.
The package is copied to ``tmp_path`` first because setuptools builds in the source tree and
would otherwise leave ``build/`` and ``*.egg-info`` in the checkout (and race parallel runs).

The last test keeps CONTRIBUTING.md honest: every code block it marks with
``<!-- verbatim: PATH -->`` must appear character for character in PATH.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from embench import plugins

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "embench-example-encoder"
SUBPROCESS_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the example plugin installed by pip, ready for ``PYTHONPATH``."""
    root = tmp_path_factory.mktemp("example-plugin")
    src = root / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__"))
    target = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--no-input", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    assert (target / "embench_example_encoder" / "__init__.py").is_file()
    return target


def _run(args: list[str], site: Path, tmp_path: Path,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` in a fresh interpreter that sees the installed example plugin.

    Runs in ``tmp_path`` so nothing (e.g. embench-results/) lands in the checkout.
    """
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("EMBENCH_LOAD_PLUGINS", "EMBENCH_DEBUG")}
    full_env.update(
        PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
        EMBENCH_DATA=str(tmp_path / "data"),
        EMBENCH_CACHE=str(tmp_path / "cache"),
        **(env or {}),
    )
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path,
                          env=full_env, timeout=SUBPROCESS_TIMEOUT_S)


def _plugins(site: Path, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, dict]:
    proc = _run(["-m", "embench", "plugins", "--json"], site, tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    return {p["name"]: p for p in json.loads(proc.stdout)}


def test_installed_plugin_is_discovered(site: Path, tmp_path: Path) -> None:
    found = _plugins(site, tmp_path)
    example = found["example"]
    assert example["version"] == "0.1.0"
    assert example["distribution"] == "embench-example-encoder"
    assert example["encoders"] == ["example-rms"]
    assert example["tasks"] == []
    assert example["error"] is None
    assert "melspec" in found  # first-party plugins are still there next to it


def test_load_plugins_env_selects_only_example(site: Path, tmp_path: Path) -> None:
    found = _plugins(site, tmp_path, {"EMBENCH_LOAD_PLUGINS": "example"})
    assert list(found) == ["example"]


def test_discovery_does_not_import_torch(site: Path, tmp_path: Path) -> None:
    """Importing the plugin (what `embench list` does) must not pay for importing torch."""
    code = ("import sys, embench_example_encoder as m; "
            "assert m.ExampleRMS.info.name == 'example-rms'; "
            "print('torch' in sys.modules)")
    proc = _run(["-c", code], site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_run_toy_genres_beats_chance(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(["-m", "embench", "run", "--encoders", "example-rms", "--tasks", "toy-genres",
                 "--seeds", "1", "--no-progress", "-o", str(out)], site, tmp_path)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    (result_file,) = out.glob("run-*.json")
    run = json.loads(result_file.read_text())
    assert run["failures"] == []
    (result,) = [r for r in run["results"]
                 if r["encoder"] == "example-rms" and r["task"] == "toy-genres"]
    assert result["main_score"] == "accuracy"
    assert result["weights"] == "pretrained"
    accuracy = result["summary"]["accuracy"]["mean"]
    chance = result["baselines"]["chance"]
    assert accuracy > chance, (accuracy, result["baselines"])


def _import_example() -> ModuleType:
    """Import the example plugin straight from its source folder (no install needed)."""
    path = EXAMPLE / "embench_example_encoder" / "__init__.py"
    spec = importlib.util.spec_from_file_location("_embench_test_example_encoder", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


embench_example_encoder = _import_example()


# CONTRIBUTING.md shows this function verbatim as the way to test a plugin in-process.
def test_example_rms_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "")  # no installed plugins: only this one
    plugins.reset()
    plugins.register_plugin(embench_example_encoder, name="example-test")
    try:
        encoder = plugins.get_registry().encoder("example-rms")
    finally:
        plugins.unregister_plugin("example-test")
        plugins.reset()
    encoder.load(torch.device("cpu"))
    descriptors, bands = encoder.forward(torch.randn(2, 16_000))
    assert descriptors.shape == (2, 51, 16) and bands.shape == (2, 51, 20)


def test_example_rms_output() -> None:
    """Finite on silence, musically sensible, batch-independent; only layer 1 has weights."""
    encoder = embench_example_encoder.ExampleRMS()
    sr = encoder.info.sample_rate
    t = torch.arange(sr) / sr
    audio = torch.stack([0.5 * torch.sin(2 * torch.pi * 440.0 * t), torch.zeros(sr)])
    encoder.load(torch.device("cpu"), "pretrained")
    descriptors, bands = encoder.forward(audio)
    assert torch.isfinite(descriptors).all() and torch.isfinite(bands).all()
    assert bands[0, 10, :12].argmax().item() == 9  # 440 Hz is an A: chroma bin 9 (C = 0)
    alone, _ = encoder.forward(audio[:1])
    torch.testing.assert_close(alone, descriptors[:1])  # rows of a batch are independent

    encoder.load(torch.device("cpu"), "random")
    random_descriptors, random_bands = encoder.forward(audio)
    torch.testing.assert_close(random_descriptors, descriptors)  # layer 0 has no parameters
    assert not torch.allclose(random_bands, bands)
    again = embench_example_encoder.ExampleRMS()
    again.load(torch.device("cpu"), "random")
    torch.testing.assert_close(again.forward(audio)[1], random_bands)  # the draw is seeded


VERBATIM = re.compile(r"<!-- verbatim: (\S+) -->\n```[a-z]*\n(.*?)\n```", re.DOTALL)


def test_contributing_examples_match_the_real_files() -> None:
    text = (REPO / "CONTRIBUTING.md").read_text()
    blocks = VERBATIM.findall(text)
    sources = {path for path, _ in blocks}
    assert "examples/embench-example-encoder/pyproject.toml" in sources
    assert "examples/embench-example-encoder/embench_example_encoder/__init__.py" in sources
    assert "tests/test_example_plugin.py" in sources
    shown = "\n".join(code for _, code in blocks)
    for must_show in ("class ExampleRMS(Encoder):", "def load(", "def forward(",
                      "@hookimpl", "[project.entry-points.embench]", "register_plugin("):
        assert must_show in shown, f"CONTRIBUTING.md no longer shows {must_show!r}"
    for path, code in blocks:
        assert code in (REPO / path).read_text(), f"a code block for {path} does not match it"
