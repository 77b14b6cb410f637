"""wav2vec 2.0 plugin: tiny random checkpoints written by ``save_pretrained`` (a pre-training
checkpoint for ``wav2vec2-base``, a CTC one for ``-960h``; no hub access) and loaded back through
the plugin's real ``load`` path, plus normalisation, windowing and the CLI with --weights-dir."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import (
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
)

from embench import Encoder, MissingWeightsError, hookimpl, plugins
from embench.extract import embed_waveforms
from embench_plugins import wav2vec2
from embench_plugins.hf_speech import BASE_ARCH, zero_mean_unit_var
from tests.helpers_cli import run_main

SR = 16_000
CPU = torch.device("cpu")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
HEADS = dict(codevector_dim=8, proj_codevector_dim=8, num_codevectors_per_group=4)


def _tiny_encoder(variant: str = "wav2vec2-base") -> wav2vec2.Wav2Vec2Encoder:
    return wav2vec2.Wav2Vec2Encoder(variant, config=Wav2Vec2Config(**TINY))


def _noise(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * SR), generator=gen) - 0.02


def _states(enc, x: torch.Tensor) -> torch.Tensor:
    """The encoder's per-layer hidden states (a list, in the model's dtype) as one
    ``[batch, layers, frames, dim]`` tensor, for comparisons."""
    states = enc.forward(x)
    assert isinstance(states, list) and len(states) == enc.info.num_layers
    return torch.stack(states, 1)



@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """``<dir>/wav2vec2-base``: a pre-training checkpoint (quantizer and projection heads, as
    the real one); ``<dir>/wav2vec2-base-960h``: a CTC checkpoint (``lm_head``)."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(11)
    Wav2Vec2ForPreTraining(Wav2Vec2Config(**TINY, **HEADS)).save_pretrained(root / "wav2vec2-base")
    Wav2Vec2ForCTC(Wav2Vec2Config(**TINY)).save_pretrained(root / "wav2vec2-base-960h")
    for name in ("wav2vec2-base", "wav2vec2-base-960h"):
        Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> wav2vec2.Wav2Vec2Encoder:
    enc = _tiny_encoder()
    enc.load(CPU, "pretrained", weights_path=str(tiny_dir))
    return enc


def _reports(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if "LOAD REPORT" in r.getMessage()]


def test_info_of_real_variants() -> None:
    base = wav2vec2.Wav2Vec2Encoder("wav2vec2-base").info
    asr = wav2vec2.Wav2Vec2Encoder("wav2vec2-base-960h").info
    assert (base.hf_id, asr.hf_id) == ("facebook/wav2vec2-base", "facebook/wav2vec2-base-960h")
    for info in (base, asr):
        assert (info.sample_rate, info.frame_rate, info.num_layers, info.dims) == (
            SR, 50.0, 13, (768,))
        assert info.window_s == 10.0 and info.hop_s is None and info.min_samples == 400
        assert info.license == "Apache-2.0" and "2006.11477" in info.citation
        assert info.revision is None and info.version == "1"
    assert "fine-tuned" in asr.description and "speech recognition" in asr.description


def test_hook_registers_both_variants_without_loading() -> None:
    registered: list[Encoder] = []
    wav2vec2.register_encoders(register=lambda enc, aliases=(): registered.append(enc))
    assert [e.name for e in registered] == ["wav2vec2-base", "wav2vec2-base-960h"]
    assert not any(e.loaded for e in registered)


def test_explicit_config_is_the_base_architecture() -> None:
    config = wav2vec2.Wav2Vec2Encoder().model_config()
    defaults = Wav2Vec2Config()
    for key in BASE_ARCH:  # the written-out base architecture = today's transformers defaults
        ours, theirs = getattr(config, key), getattr(defaults, key)
        if isinstance(ours, (list, tuple)):
            ours, theirs = list(ours), list(theirs)
        assert ours == theirs, key
    assert config.feat_extract_norm == "group" and not config.do_stable_layer_norm
    assert not config.conv_bias and config.layerdrop == 0.0
    with torch.device("meta"):
        model = wav2vec2.Wav2Vec2Encoder().model_class()(config)
    assert 94e6 < sum(p.numel() for p in model.parameters()) < 95e6


def test_shapes_and_frame_rate(tiny) -> None:
    assert (tiny.info.num_layers, tiny.info.dims, tiny.info.frame_rate) == (3, (32,), 50.0)
    out = _states(tiny, _noise(3, 2.0))
    assert out.shape[:2] == (3, 3) and out.shape[3] == 32 and out.dtype == torch.float32
    assert abs(out.shape[2] - 2.0 * 50) <= 1
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="at least 400 samples"):
        _states(tiny, torch.zeros(1, 399))


def test_pretraining_checkpoint_loads_silently_and_completely(tiny_dir, hf_warnings) -> None:
    # the capture works: a plain Wav2Vec2Model reports the unused pre-training heads ...
    Wav2Vec2Model.from_pretrained(tiny_dir / "wav2vec2-base", config=Wav2Vec2Config(**TINY))
    assert _reports(hf_warnings) and "quantizer" in _reports(hf_warnings)[0]
    hf_warnings.clear()
    # ... the plugin declares them expected, and nothing else is missing or unexpected
    enc = _tiny_encoder()
    enc.load(CPU, "pretrained", weights_path=str(tiny_dir))
    assert not _reports(hf_warnings)
    saved = Wav2Vec2ForPreTraining.from_pretrained(tiny_dir / "wav2vec2-base").wav2vec2
    expected, loaded = saved.state_dict(), enc.model.state_dict()
    assert set(expected) == set(loaded)
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def test_ctc_checkpoint_for_960h(tiny_dir, hf_warnings) -> None:
    enc = _tiny_encoder("wav2vec2-base-960h")
    enc.load(CPU, "pretrained", weights_path=str(tiny_dir))
    assert not _reports(hf_warnings)
    ctc = Wav2Vec2ForCTC.from_pretrained(tiny_dir / "wav2vec2-base-960h")
    x = _noise(1, 1.0)
    with torch.no_grad():
        ref = ctc.wav2vec2(zero_mean_unit_var(x), output_hidden_states=True).hidden_states
    torch.testing.assert_close(_states(enc, x), torch.stack(ref, 1))


def test_deterministic_across_calls_and_loads(tiny, tiny_dir) -> None:
    x = _noise(2, 1.0)
    first = _states(tiny, x)
    torch.testing.assert_close(_states(tiny, x), first, rtol=0, atol=0)
    again = _tiny_encoder()
    again.load(CPU, "pretrained", weights_path=str(tiny_dir))
    torch.testing.assert_close(_states(again, x), first, rtol=0, atol=0)


def test_batched_equals_one_at_a_time(tiny) -> None:
    x = _noise(4, 1.5, seed=3)
    batched = _states(tiny, x)
    single = torch.cat([_states(tiny, x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-4)


def test_normalisation_matches_feature_extractor(tiny, tiny_dir) -> None:
    x = _noise(3, 1.0, seed=5) * torch.tensor([[1.0], [0.001], [4.0]])
    fe = Wav2Vec2FeatureExtractor.from_pretrained(tiny_dir / "wav2vec2-base")
    assert fe.do_normalize and fe.sampling_rate == SR
    expected = fe([row.numpy() for row in x], sampling_rate=SR, return_tensors="pt").input_values
    torch.testing.assert_close(zero_mean_unit_var(x), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        ref = tiny.model(expected, output_hidden_states=True).hidden_states
    torch.testing.assert_close(_states(tiny, x), torch.stack(ref, 1), rtol=1e-4, atol=1e-4)


def test_30s_clip_is_three_equal_10s_windows(tiny) -> None:
    calls: list[tuple[int, ...]] = []
    forward = tiny.forward
    tiny.forward = lambda w: calls.append(tuple(w.shape)) or forward(w)
    try:
        clips = embed_waveforms(tiny, [_noise(1, 30.0)[0], _noise(1, 25.0)[0]], frame_rate=1.0,
                                batch_size=8)
    finally:
        del tiny.forward
    # 30 s: 0-10-20-30; 25 s: 0-10 and an end-aligned 15-25 (equal length, never padded)
    assert calls == [(6, 10 * SR)]
    assert [clip[0].shape for clip in clips] == [(30, 32), (25, 32)]


def test_half_precision_checkpoint_runs_in_fp32(tmp_path) -> None:
    """transformers 5 loads a checkpoint in its stored dtype; the encoder must not."""
    Wav2Vec2Model(Wav2Vec2Config(**TINY)).half().save_pretrained(tmp_path / "wav2vec2-base")
    enc = _tiny_encoder()
    enc.load(CPU, "pretrained", weights_path=str(tmp_path))
    assert {p.dtype for p in enc.model.parameters()} == {torch.float32}
    assert torch.isfinite(_states(enc, _noise(1, 0.5))).all()


def test_checkpoint_of_another_model_type_is_refused(tmp_path) -> None:
    HubertModel(HubertConfig(**TINY)).save_pretrained(tmp_path / "wav2vec2-base")
    with pytest.raises(MissingWeightsError, match="model_type 'hubert'"):
        _tiny_encoder().load(CPU, "pretrained", weights_path=str(tmp_path))


def test_offline_without_weights_says_what_to_do() -> None:
    with pytest.raises(MissingWeightsError) as err:
        wav2vec2.Wav2Vec2Encoder("wav2vec2-base-960h").load(CPU, "pretrained")
    msg = str(err.value)
    for needle in ("facebook/wav2vec2-base-960h", "HF_HOME", "HF_HUB_OFFLINE", "hf download"):
        assert needle in msg


def test_random_weights_seeded_and_trainable() -> None:
    a, b = _tiny_encoder(), _tiny_encoder()
    a.load(CPU, "random")
    b.load(CPU, "random")
    assert a.weights == "random"
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                              strict=True):
        assert torch.equal(pa, pb), name
    module = a.trainable_module()
    assert any(p.requires_grad for p in module.parameters())
    a.set_gradient_checkpointing(True)
    module.train()
    out = _states(a, _noise(2, 1.0))
    assert out.shape[1] == 3
    out.pow(2).mean().backward()
    assert module.encoder.layers[-1].feed_forward.output_dense.weight.grad is not None
    a.unload()
    assert not a.loaded
    with pytest.raises(RuntimeError, match="load"):
        _states(a, _noise(1, 1.0))


class _TinyWav2Vec2:
    @hookimpl
    def register_encoders(self, register):
        register(_tiny_encoder())


def test_cli_pretrained_from_weights_dir(tmp_path, tiny_dir, monkeypatch) -> None:
    from tests.fakes import FakePlugin

    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "")
    plugins.register_plugin(_TinyWav2Vec2(), name="tiny-wav2vec2")
    plugins.register_plugin(FakePlugin(), name="fake")
    out = tmp_path / "out"
    assert run_main(["run", "-e", "wav2vec2-base", "-t", "fake-tones", "--seeds", "1",
                     "--no-progress", "--num-workers", "0", "--weights-dir", str(tiny_dir),
                     "-o", str(out)]) == 0
    (result,) = json.loads(next(out.glob("run-*.json")).read_text())["results"]
    assert (result["encoder"], result["weights"]) == ("wav2vec2-base", "pretrained")
    assert [s["clip_id"] for s in result["skipped"]] == ["broken"]
