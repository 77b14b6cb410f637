"""``--precision``: what ``auto`` resolves to, bf16 weights for frozen extraction only, separate
cache entries per precision, and fp32 weights back whenever fp32 (or fine-tuning) is asked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import HubertConfig

from embench import Clip, ClipSet, EmbenchError, hookimpl, plugins
from embench import precision as precisions
from embench.extract import embed_waveforms, extract
from embench.plugins import get_registry
from embench_plugins import mert
from tests.helpers_cli import run_main
from tests.test_mert import TINY, _noise

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _tiny() -> mert.MertEncoder:
    return mert.MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))


def test_auto_is_fp32_on_cpu_and_bf16_weights_on_cuda_where_allowed():
    melspec = get_registry().encoder("melspec")
    assert precisions.resolve("auto", _tiny(), CPU) == "fp32"
    assert precisions.resolve("auto", _tiny(), CUDA) == "bf16"
    assert precisions.resolve("auto", melspec, CUDA) == "bf16-autocast"
    assert precisions.resolve("bf16-autocast", _tiny(), CUDA) == "bf16-autocast"
    assert precisions.resolve("fp32", _tiny(), CUDA) == "fp32"


def test_bf16_falls_back_to_autocast_for_encoders_that_keep_fp32_weights():
    """``--encoders all --precision bf16`` must not fail the encoders that cannot cast."""
    assert precisions.resolve("bf16", get_registry().encoder("melspec"), CUDA) == "bf16-autocast"
    assert precisions.resolve("bf16", get_registry().encoder("clap-music"), CPU) == (
        "bf16-autocast")


def test_unknown_precision_lists_the_choices():
    with pytest.raises(EmbenchError, match="not one of auto, fp32, bf16-autocast, bf16"):
        precisions.resolve("fp16", _tiny(), CPU)


def test_prepare_casts_and_reloads_fp32_instead_of_casting_back():
    enc = _tiny()
    precisions.prepare(enc, "fp32", CPU, "random", None)
    fp32 = {k: v.clone() for k, v in enc.model.state_dict().items()}
    precisions.prepare(enc, "bf16", CPU, "random", None)
    assert enc.cast_dtype == torch.bfloat16
    assert {p.dtype for p in enc.model.parameters()} == {torch.bfloat16}
    precisions.prepare(enc, "fp32", CPU, "random", None)
    assert enc.cast_dtype is None
    for key, value in enc.model.state_dict().items():  # the checkpoint's bits, not bf16's
        assert torch.equal(value, fp32[key]), key
    precisions.prepare(enc, "bf16", CPU, "random", None)
    enc.unload()  # what fine-tuning does before its own load
    enc.load(CPU, "random")
    assert enc.cast_dtype is None
    assert {p.dtype for p in enc.model.parameters()} == {torch.float32}


def _tiny_330m() -> mert.MertEncoder:  # pre-LayerNorm ("stable") transformer, last state tied
    return mert.MertEncoder("mert-v1-330m", config=HubertConfig(
        **TINY, do_stable_layer_norm=True, tie_last_hidden_states=True))


def _tiny_wav2vec2():
    from transformers import Wav2Vec2Config

    from embench_plugins import wav2vec2
    from tests.test_wav2vec2 import TINY as W2V_TINY

    return wav2vec2.Wav2Vec2Encoder("wav2vec2-base", config=Wav2Vec2Config(**W2V_TINY))


@pytest.mark.parametrize("make", [_tiny, _tiny_330m, _tiny_wav2vec2],
                         ids=["mert-95m", "mert-330m", "wav2vec2"])
def test_bf16_weights_stay_as_close_to_fp32_as_autocast(make):
    """Frame embeddings of every layer: bf16 weights within the error autocast already has."""
    enc, x = make(), _noise(2, 5.0)
    precisions.prepare(enc, "fp32", CPU, "random", None)
    cos = torch.nn.functional.cosine_similarity
    with torch.inference_mode():
        ref = enc.forward(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = enc.forward(x)
        precisions.prepare(enc, "bf16", CPU, "random", None)
        bf16 = enc.forward(x)
    # states come out as the model made them (the pooler sums them in fp32), not copied to fp32
    assert {s.dtype for s in ref} == {torch.float32}
    assert {s.dtype for s in bf16} == {torch.bfloat16}
    for layer in range(len(ref)):
        ours = cos(bf16[layer].float().flatten(1), ref[layer].flatten(1)).min().item()
        theirs = cos(autocast[layer].float().flatten(1), ref[layer].flatten(1)).min().item()
        assert ours > 0.999, layer
        assert 1 - ours < 3 * (1 - theirs) + 1e-4, layer


def test_each_precision_has_its_own_cache_entry(tmp_path):
    clips = []
    for i in range(2):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, _noise(1, 6.0, seed=i)[0].numpy(), 24_000)
        clips.append(Clip(f"c{i}", path, "x", "train"))
    clipset = ClipSet("bench/precision", "none", clips)
    enc = _tiny()
    common = dict(device=CPU, weights="random", show_progress=False, num_workers=0,
                  log=lambda m: None)
    fp32 = extract(enc, clipset, tmp_path / "cache", precision="fp32", **common)
    bf16 = extract(enc, clipset, tmp_path / "cache", precision="bf16", **common)
    assert fp32.cache.key.compute_dtype == "fp32"
    assert bf16.cache.key.compute_dtype == "bf16"
    assert fp32.cache.dir != bf16.cache.dir
    a, b = np.concatenate(fp32.frames(2)), np.concatenate(bf16.frames(2))
    assert a.shape == b.shape == (12, 32)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.999
    assert not np.array_equal(a, b)
    waves = embed_waveforms(enc, [_noise(1, 6.0)[0]], 1.0, precision="bf16")
    assert waves[0][0].shape[0] == 6


class _TinyMert:
    @hookimpl
    def register_encoders(self, register):
        register(_tiny())


def test_cli_precision_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "toy")
    plugins.register_plugin(_TinyMert(), name="tiny-mert")
    out = tmp_path / "out"
    assert run_main(["run", "-e", "mert-v1-95m", "--weights", "random", "-t", "toy-genres",
                     "--seeds", "1", "--precision", "bf16", "--no-progress",
                     "--num-workers", "0", "-o", str(out)]) == 0
    data = json.loads(next(out.glob("run-*.json")).read_text())
    assert data["spec"]["precision"] == "bf16"
    assert data["results"][0]["preprocessing"]["compute_dtype"] == "bf16"


def test_cpu_with_native_bf16_gets_a_tip_not_a_different_default(monkeypatch):
    monkeypatch.setattr(precisions, "native_bf16_cpu", lambda: True)
    assert precisions.resolve("auto", _tiny(), CPU) == "fp32"
    tip = precisions.cpu_hint("auto", _tiny(), CPU)
    assert tip is not None and "--precision bf16" in tip
    assert precisions.cpu_hint("fp32", _tiny(), CPU) is None  # chosen explicitly: no tip
    assert precisions.cpu_hint("auto", get_registry().encoder("melspec"), CPU) is None
    assert precisions.cpu_hint("auto", _tiny(), CUDA) is None
    monkeypatch.setattr(precisions, "native_bf16_cpu", lambda: False)
    assert precisions.cpu_hint("auto", _tiny(), CPU) is None


def test_extraction_says_when_an_encoder_falls_back_and_keys_what_ran(tmp_path):
    from tests.fakes import SpectralEncoder, ToneTask

    logs: list[str] = []
    feats = extract(SpectralEncoder(), ToneTask().load(tmp_path / "data"), tmp_path / "cache",
                    device=CPU, num_workers=0, show_progress=False, log=logs.append,
                    precision="bf16")
    assert feats.cache.key.compute_dtype == "bf16-autocast"
    assert any("runs bf16-autocast instead of bf16" in m for m in logs), logs
