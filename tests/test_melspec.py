"""Tests for the weight-free ``melspec`` baseline plugin."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from embench import Encoder, EncoderInfo


def _import_melspec() -> ModuleType:
    """Import ``embench_plugins.melspec``; from ``plugins/`` when the package is not installed.

    ``embench_plugins`` only exists once the project is installed (pyproject maps it onto
    ``plugins/``), and these tests must also run straight from a checkout.
    """
    try:
        return importlib.import_module("embench_plugins.melspec")
    except ModuleNotFoundError:
        path = Path(__file__).resolve().parents[1] / "plugins" / "melspec.py"
        spec = importlib.util.spec_from_file_location("_embench_test_melspec", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


melspec = _import_melspec()
SR = 16_000


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    enc = melspec.MelSpec()
    enc.load(torch.device("cpu"))
    return enc


def _noise(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * SR), generator=gen)


def test_info() -> None:
    info = melspec.MelSpec.info
    assert isinstance(info, EncoderInfo)
    assert info.name == "melspec"
    assert info.sample_rate == SR
    assert info.num_layers == 3
    assert info.dims == (64, 128, 64)
    assert info.frame_rate == 50.0
    assert info.window_s is None
    assert info.min_samples == 1024
    assert info.license == "Apache-2.0"


def test_hook_registers_one_melspec() -> None:
    registered: list[Encoder] = []
    melspec.register_encoders(register=lambda enc, aliases=(): registered.append(enc))
    assert len(registered) == 1
    assert isinstance(registered[0], Encoder)
    assert registered[0].name == "melspec"
    assert not registered[0].loaded  # registration must not build anything


def test_load_sets_state() -> None:
    enc = melspec.MelSpec()
    for weights in ("pretrained", "random"):
        enc.load(torch.device("cpu"), weights=weights)
        assert enc.loaded and enc.device == torch.device("cpu") and enc.weights == weights
    enc.unload()
    assert not enc.loaded
    with pytest.raises(RuntimeError):
        enc.forward(_noise(1, 1.0))


def test_shapes_and_frame_rate(encoder: Encoder) -> None:
    x = _noise(3, 4.0)
    layers = encoder.forward(x)
    assert len(layers) == encoder.info.num_layers
    frames = x.shape[1] // 320 + 1
    assert frames / 4.0 == pytest.approx(encoder.info.frame_rate, rel=0.01)
    for i, out in enumerate(layers):
        assert out.shape == (3, frames, encoder.info.layer_dim(i))
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()


def test_layer_relations(encoder: Encoder) -> None:
    lm, moments, delta = encoder.forward(_noise(2, 1.0))
    torch.testing.assert_close(moments[..., :64], lm)
    torch.testing.assert_close(moments[..., 64:], lm.square())
    assert (delta >= 0).all()
    assert (delta[:, 0] == 0).all()
    torch.testing.assert_close(delta[:, 1:], (lm[:, 1:] - lm[:, :-1]).abs())


def test_min_samples(encoder: Encoder) -> None:
    n = encoder.info.min_samples
    layers = encoder.forward(_noise(2, n / SR))
    for out in layers:
        assert out.shape[:2] == (2, n // 320 + 1)
        assert torch.isfinite(out).all()
    with pytest.raises(ValueError):
        encoder.forward(_noise(1, (n - 1) / SR))


def test_silence_is_finite(encoder: Encoder) -> None:
    lm, moments, delta = encoder.forward(torch.zeros(1, SR))
    torch.testing.assert_close(lm, torch.full_like(lm, math.log(1e-6)))
    assert (delta == 0).all()


def test_filterbank_sanity() -> None:
    fb = melspec.mel_filterbank()
    assert fb.shape == (513, 64)
    assert (fb >= 0).all() and (fb <= 1).all()
    assert (fb.sum(0) > 0).all(), "every mel filter must see at least one FFT bin"
    peaks = fb.argmax(0)
    assert (peaks[1:] >= peaks[:-1]).all(), "filter centres must increase with mel index"
    assert fb[-1].sum() < 1e-6  # the Nyquist bin lies on the last filter's upper edge


def _expected_bin(hz: float) -> int:
    """Index of the HTK mel filter whose centre is nearest ``hz`` (0..8 kHz, 64 filters)."""
    top = 2595.0 * math.log10(1.0 + 8000.0 / 700.0)
    centres = [top * (k + 1) / 65 for k in range(64)]
    mel = 2595.0 * math.log10(1.0 + hz / 700.0)
    return min(range(64), key=lambda k: abs(centres[k] - mel))


@pytest.mark.parametrize("hz", [250.0, 1000.0, 4000.0])
def test_sine_lands_in_right_bin(encoder: Encoder, hz: float) -> None:
    t = torch.arange(2 * SR, dtype=torch.float64) / SR
    sine = (0.5 * torch.sin(2 * math.pi * hz * t)).float().unsqueeze(0)
    lm = encoder.forward(sine)[0][0].mean(0)
    assert int(lm.argmax()) == _expected_bin(hz)
    # a pure tone is narrowband: bins far from it are orders of magnitude quieter
    assert lm.max() - lm.median() > math.log(1e3)


def test_batch_matches_single(encoder: Encoder) -> None:
    x = _noise(5, 2.5, seed=1)
    batched = encoder.forward(x)
    for i in range(x.shape[0]):
        single = encoder.forward(x[i : i + 1])
        for b, s in zip(batched, single, strict=True):
            torch.testing.assert_close(b[i : i + 1], s, rtol=1e-5, atol=1e-4)


def test_deterministic(encoder: Encoder) -> None:
    x = _noise(4, 1.5, seed=2)
    first = encoder.forward(x)
    second = melspec.MelSpec()
    second.load(torch.device("cpu"), weights="random")
    for a, b, c in zip(first, encoder.forward(x), second.forward(x), strict=True):
        assert torch.equal(a, b)
        assert torch.equal(a, c)  # "random" weights are the same: there are none


def test_arbitrary_lengths(encoder: Encoder) -> None:
    for n in (1024, 1025, 5000, 16_000 * 3 + 7):
        out = encoder.forward(_noise(1, n / SR))
        assert [o.shape[1] for o in out] == [n // 320 + 1] * 3


def test_weights_random_runs_melspec_as_itself_not_as_a_random_init_row(tmp_path, capsys,
                                                                         fake_plugin):
    """melspec has nothing to initialise: a random-init control run must neither label it
    "random init" (a duplicate row with identical scores) nor embed its audio a second time."""
    import json

    from tests.helpers_cli import run_main

    out = tmp_path / "out"
    args = ["run", "-t", "fake-tones", "--seeds", "1", "--device", "cpu", "-o", str(out)]
    assert run_main([*args, "-e", "melspec"]) == 0
    capsys.readouterr()
    assert run_main([*args, "-e", "melspec,fake-spectral", "--weights", "random"]) == 0
    err = capsys.readouterr().err
    assert "melspec has nothing to initialise at random" in err
    assert "fake-spectral has nothing" not in err
    newest = max(out.glob("run-*.json"), key=lambda p: p.stat().st_mtime_ns)
    weights = {r["encoder"]: r["weights"] for r in json.loads(newest.read_text())["results"]}
    assert weights == {"melspec": "pretrained", "fake-spectral": "random"}
    assert "melspec: 12 of 13 clips cached" in err  # all but the broken file: no second embedding
    assert "(random init)" not in (out / "leaderboard.md").read_text().split("melspec")[1][:40]
