"""Tests for the CLAP encoder plugin, offline: tiny random HTSAT models saved with
``save_pretrained`` and loaded back through the plugin's real loading path.

The reference for the preprocessing is transformers' own ``ClapFeatureExtractor`` with the
checkpoints' settings; the reference for the model is calling ``ClapAudioModelWithProjection``
(or a full ``ClapModel``, the layout of the hub checkpoints) on the extractor's features.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    ClapAudioConfig,
    ClapAudioModelWithProjection,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
)

from embench import EmbenchError, Encoder, MissingWeightsError, hookimpl, plugins
from embench.extract import embed_waveforms

clap = importlib.import_module("embench_plugins.clap")

SR = 48_000
CPU = torch.device("cpu")
# FACTS: the smallest audio config that builds (hidden = patch_hidden * 2^(len(depths) - 1)).
TINY = {"depths": [1, 1], "num_attention_heads": [2, 2], "patch_embeds_hidden_size": 16,
        "hidden_size": 32, "projection_dim": 24}
# Per 10 s window: patch_embed, stage1, stage2 (time layers), pooled, projection.
TINY_LAYERS = [(256, 16), (256, 16), (128, 32), (1, 32), (1, 24)]


def _tiny_config() -> ClapAudioConfig:
    return ClapAudioConfig(**TINY)


def _extractor() -> ClapFeatureExtractor:
    return ClapFeatureExtractor(**clap.EXTRACTOR_SETTINGS)


def _noise(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, round(seconds * SR), generator=gen)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/larger_clap_music``: a tiny random checkpoint + the checkpoint's extractor."""
    root = tmp_path_factory.mktemp("clap-weights")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)  # differs from hf_loading's random-init seed on purpose
        model = ClapAudioModelWithProjection(_tiny_config())
    model.save_pretrained(root / "larger_clap_music")
    _extractor().save_pretrained(root / "larger_clap_music")
    return root


@pytest.fixture(scope="module")
def encoder(weights_dir: Path) -> Encoder:
    enc = clap.Clap("clap-music", config=_tiny_config())
    enc.load(CPU, "pretrained", weights_path=str(weights_dir))
    return enc


def _forward(enc: Encoder, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        return enc.forward(x)


def test_real_checkpoint_layers() -> None:
    """The declared layers of both real checkpoints, and that their configs build the model
    (on the meta device: no memory, no weights) with the widths the info declares."""
    expected = {
        "clap-music": (128, 128, 256, 512, 1024, 1024, 512),
        "clap-htsat-unfused": (96, 96, 192, 384, 768, 768, 512),
    }
    for name, dims in expected.items():
        enc = clap.Clap(name)
        info = enc.info
        assert (info.name, info.num_layers, info.dims) == (name, 7, dims)
        assert info.sample_rate == SR and info.window_s == 10.0 and info.hop_s is None
        assert info.frame_rate == pytest.approx(25.6) and info.revision is None
        assert info.hf_id == clap.VARIANTS[name].model_id and info.version == "1"
        assert [layer.frames for layer in enc.layers] == [256, 256, 128, 64, 32, 1, 1]
        with torch.device("meta"):
            model = ClapAudioModelWithProjection(enc._config())
        assert model.audio_projection.linear1.in_features == dims[-2]
        assert model.audio_projection.linear2.out_features == dims[-1]
        assert model.audio_model.audio_encoder.patch_embed.proj.out_channels == dims[0]


def test_hook_registers_both_without_loading() -> None:
    registered: list[Encoder] = []
    clap.register_encoders(register=lambda enc, aliases=(): registered.append(enc))
    assert [e.name for e in registered] == ["clap-music", "clap-htsat-unfused"]
    assert not any(e.loaded for e in registered)


def test_custom_config_gets_own_info_and_cache_version() -> None:
    enc = clap.Clap("clap-music", config=_tiny_config())
    assert enc.info.dims == tuple(d for _, d in TINY_LAYERS)
    assert enc.info.num_layers == 5 and enc.info.frame_rate == pytest.approx(25.6)
    assert enc.info.version.startswith("1-custom-")
    assert clap.Clap("clap-music", config=dict(TINY)).info == enc.info  # a dict works too


def _tone_then_silence() -> torch.Tensor:
    """A pure tone, then digital silence: quiet bands sit ~120 dB under the peak, where a
    float32 STFT is off by ~0.04 dB (measured) and the float64 one is exact to 1e-5."""
    t = torch.arange(10 * SR, dtype=torch.float64) / SR
    x = (0.5 * torch.sin(2 * math.pi * 440.0 * t)).float()
    x[5 * SR:] = 0.0
    return x[None]


@pytest.mark.parametrize("signal", ["noise-10s", "noise-3s", "noise-7.3s", "noise-0.05s",
                                    "tone-silence-10s"])
def test_log_mel_matches_feature_extractor(encoder: Encoder, signal: str) -> None:
    """Same features as the checkpoint's extractor, including repeatpad for short clips."""
    kind, seconds = signal.rsplit("-", 1)
    x = _noise(2, float(seconds[:-1]), seed=1) if kind == "noise" else _tone_then_silence()
    ref = _extractor()([a.numpy() for a in x], sampling_rate=SR, return_tensors="pt")
    ours = encoder.log_mel(x)
    assert ours.dtype == torch.float32 and ours.shape == (len(x), 1001, 64)
    torch.testing.assert_close(ours, ref.input_features[:, 0], atol=1e-4, rtol=0)


def test_log_mel_stays_float32_under_autocast(encoder: Encoder) -> None:
    x = _noise(1, 2.0, seed=2)
    plain = encoder.log_mel(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(encoder.log_mel(x), plain)


def test_layers_match_transformers_model_on_extractor_features(encoder: Encoder) -> None:
    """``pooled``/``projection`` are what the checkpoint computes from its own preprocessing."""
    x = _noise(2, 10.0, seed=3)
    feats = _extractor()([a.numpy() for a in x], sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        ref = encoder.model(input_features=feats.input_features)
        pooled_ref = encoder.model.audio_model(input_features=feats.input_features).pooler_output
    layers = _forward(encoder, x)
    torch.testing.assert_close(layers[-1][:, 0], ref.audio_embeds, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(layers[-2][:, 0], pooled_ref, atol=1e-4, rtol=1e-4)
    assert encoder.model.config._attn_implementation == "eager"


def test_shapes_dims_and_frames_per_window(encoder: Encoder) -> None:
    layers = _forward(encoder, _noise(3, 10.0))
    assert len(layers) == encoder.info.num_layers
    for i, (out, (frames, dim)) in enumerate(zip(layers, TINY_LAYERS, strict=True)):
        assert out.shape == (3, frames, dim) and dim == encoder.info.layer_dim(i)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert max(f for f, _ in TINY_LAYERS) / 10.0 == pytest.approx(encoder.info.frame_rate)


def test_grid_to_frames_matches_transformers_unfolding(encoder: Encoder) -> None:
    """Our chunk-major unfolding of a stage grid is the one transformers applies to
    ``last_hidden_state`` (LayerNorm of the last stage, then reshaped to [B, C, freq, time])."""
    feats = encoder.log_mel(_noise(2, 10.0, seed=4)).unsqueeze(1)
    audio = encoder.model.audio_model
    with torch.inference_mode():
        out = audio(input_features=feats, output_hidden_states=True,
                    output_hidden_states_before_downsampling=True)
        last = out.hidden_states[-1]  # [B, C, H, W]
        b, c, h, w = last.shape
        normed = audio.audio_encoder.norm(last.flatten(2).transpose(1, 2))
        grid = normed.transpose(1, 2).reshape(b, c, h, w)
    ours = clap.grid_to_frames(grid, freq_ratio=4)
    torch.testing.assert_close(ours, out.last_hidden_state.mean(2).transpose(1, 2))


def test_frames_follow_time(encoder: Encoder) -> None:
    """A noise burst at 5.0-7.5 s moves exactly the patch-embedding frames at 5.0-7.5 s (frames
    128-191 of 256): the chunks stacked along the image height come back in time order."""
    x = torch.zeros(1, 10 * SR)
    x[0, 5 * SR:int(7.5 * SR)] = _noise(1, 2.5, seed=5)[0]
    patch = _forward(encoder, x)[0][0]  # [256, 16]
    moved = ((patch - patch[0]).abs().amax(-1) > 1e-3).nonzero().squeeze(1)
    assert 126 <= int(moved.min()) <= 129 and 190 <= int(moved.max()) <= 193
    assert len(moved) == int(moved.max()) - int(moved.min()) + 1


def test_deterministic_no_random_crop(encoder: Encoder) -> None:
    """Twice the same input, whatever numpy's and torch's global RNGs say -> identical output
    (the extractor's rand_trunc draws from numpy's RNG; it must never be in play)."""
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            for seconds in (10.0, 3.0):
                x = _noise(2, seconds, seed=6)
                np.random.seed(1)
                torch.manual_seed(1)
                first = _forward(encoder, x)
                np.random.seed(2)
                torch.manual_seed(2)
                second = _forward(encoder, x)
                for a, b in zip(first, second, strict=True):
                    assert torch.equal(a, b)
    finally:
        np.random.set_state(np_state)


def test_longer_than_window_is_refused(encoder: Encoder) -> None:
    with pytest.raises(EmbenchError, match="window-s"):
        encoder.forward(torch.zeros(1, 10 * SR + 1))


def test_short_clip_is_repeat_padded(encoder: Encoder) -> None:
    """3 s -> three copies + 1 s of zeros (repeatpad); time layers keep the first copy's frames."""
    x = _noise(1, 3.0, seed=7)
    padded = torch.cat([x, x, x, torch.zeros(1, SR)], dim=1)
    short, full = _forward(encoder, x), _forward(encoder, padded)
    for (frames, _), s, f in zip(TINY_LAYERS, short, full, strict=True):
        assert s.shape[1] == math.ceil(frames * 0.3)
        torch.testing.assert_close(s, f[:, :s.shape[1]], atol=1e-5, rtol=1e-5)


def test_batch_matches_single(encoder: Encoder) -> None:
    x = _noise(3, 10.0, seed=8)
    batched = _forward(encoder, x)
    for i in range(3):
        for b, s in zip(batched, _forward(encoder, x[i:i + 1]), strict=True):
            torch.testing.assert_close(b[i:i + 1], s, atol=1e-5, rtol=1e-5)


def test_core_windows_30s_clip(encoder: Encoder) -> None:
    """30 s -> three 10 s windows -> every layer pooled to 30 one-second frames."""
    wave = _noise(1, 30.0, seed=9)[0]
    (layers,) = embed_waveforms(encoder, [wave], frame_rate=1.0, batch_size=4)
    assert [a.shape for a in layers] == [(30, d) for _, d in TINY_LAYERS]
    assert all(np.isfinite(a).all() for a in layers)


def test_loads_full_clap_model_checkpoint(tmp_path: Path) -> None:
    """The hub checkpoints are whole ClapModels (text tower too): the audio half loads, and the
    normalised projection equals ClapModel.get_audio_features."""
    cfg = ClapConfig(audio_config=TINY, projection_dim=24, text_config={
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 37})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        full = ClapModel(cfg).eval()
    full.save_pretrained(tmp_path / "clap-htsat-unfused")
    enc = clap.Clap("clap-htsat-unfused", config=_tiny_config())
    enc.load(CPU, "pretrained", weights_path=str(tmp_path))
    x = _noise(2, 10.0, seed=10)
    with torch.inference_mode():
        ref = full.get_audio_features(input_features=enc.log_mel(x).unsqueeze(1)).pooler_output
    ours = _forward(enc, x)[-1][:, 0]
    torch.testing.assert_close(torch.nn.functional.normalize(ours, dim=-1), ref,
                               atol=1e-5, rtol=1e-5)


def test_folder_with_other_architecture_is_refused(weights_dir: Path) -> None:
    enc = clap.Clap("clap-music")  # the real HTSAT-base config; the folder holds the tiny one
    with pytest.raises(EmbenchError, match="patch_embeds_hidden_size"):
        enc.load(CPU, "pretrained", weights_path=str(weights_dir))
    assert not enc.loaded


def test_folder_with_other_preprocessing_warns(tmp_path: Path, weights_dir: Path) -> None:
    folder = tmp_path / "larger_clap_music"
    folder.mkdir()
    for f in (weights_dir / "larger_clap_music").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**cfg, "truncation": "fusion"}))
    with pytest.warns(UserWarning, match="truncation='fusion'"):
        clap.Clap("clap-music", config=_tiny_config()).load(CPU, "pretrained", str(tmp_path))


def test_offline_without_weights_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as err:
        clap.Clap("clap-music").load(CPU, "pretrained")
    assert "laion/larger_clap_music" in str(err.value) and "hf download" in str(err.value)
    with pytest.raises(MissingWeightsError, match="hf download laion/clap-htsat-unfused"):
        clap.Clap("clap-htsat-unfused").load(CPU, "pretrained", weights_path=str(tmp_path))


def test_random_weights_are_seeded(encoder: Encoder) -> None:
    states = []
    for _ in range(2):
        enc = clap.Clap("clap-music", config=_tiny_config())
        enc.load(CPU, "random")
        assert enc.weights == "random" and enc.trainable_module() is enc.model
        states.append(enc.model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    pretrained = encoder.model.state_dict()
    assert any(not torch.equal(states[0][k], pretrained[k]) for k in pretrained)


def _run_cli(out: Path) -> dict:
    from tests.helpers_cli import run_main

    assert run_main(["run", "--encoders", "clap-music", "--weights", "random", "--tasks",
                     "toy-genres", "--seeds", "1", "--no-progress", "--num-workers", "0",
                     "-o", str(out)]) == 0
    (result_file,) = out.glob("run-*.json")
    result = json.loads(result_file.read_text())
    assert not result["failures"]
    assert [r["encoder"] for r in result["results"]] == ["clap-music"]
    return result


class _TinyClapPlugin:
    """A tiny-config CLAP registered as ``clap-music``; optionally a 30-clip toy-genres."""

    def __init__(self, small_toy: bool) -> None:
        self.small_toy = small_toy

    @hookimpl
    def register_encoders(self, register):
        register(clap.Clap("clap-music", config=_tiny_config()))

    @hookimpl
    def register_tasks(self, register):
        if self.small_toy:
            from embench_tasks.toy import ToyGenres

            register(ToyGenres(clips_per_genre=5))


def test_cli_end_to_end_random_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``embench run`` with a tiny CLAP as ``clap-music`` on toy-genres (4 s clips at 16 kHz,
    resampled to 48 kHz, one repeat-padded window each). The toy set is cut to 5 clips per genre
    (the toy task's own test size): each clip costs a full 10 s window, ~0.08 s on two cores."""
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "")  # no entry points: no real clap, no toy
    plugins.register_plugin(_TinyClapPlugin(small_toy=True), name="tiny-clap")
    result = _run_cli(tmp_path / "out")
    assert result["results"][0]["n_clips"] == {"train": 18, "valid": 6, "test": 6}


@pytest.mark.slow
def test_cli_end_to_end_full_toy_genres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on the standard 240-clip toy-genres (~30 s on two CPU cores)."""
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "toy")  # the toy tasks, not the real clap
    plugins.register_plugin(_TinyClapPlugin(small_toy=False), name="tiny-clap")
    _run_cli(tmp_path / "out")
