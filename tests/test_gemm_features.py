"""The channels-last GEMM feature encoder equals the module's convolutions at inference, and
training keeps the module's own forward."""

from __future__ import annotations

import pytest
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

from embench_plugins import gemm_features


def _hubert(**arch) -> HubertModel:
    torch.manual_seed(0)
    config = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=37, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=2)
    return HubertModel(HubertConfig(**{**config, **arch})).eval()


ARCHS = {
    "base (group norm, kernels 10/3/2)": {},
    "layer norm and conv bias": {"feat_extract_norm": "layer", "conv_bias": True},
    "odd strides and kernels": {"conv_dim": (8, 12, 16), "conv_kernel": (7, 5, 2),
                                "conv_stride": (3, 3, 2)},
}


@pytest.mark.parametrize("arch", ARCHS.values(), ids=ARCHS.keys())
@pytest.mark.parametrize("samples", [400, 401, 1999, 16000, 16003])
def test_features_equal_the_module(arch, samples):
    model = _hubert(**arch)
    encoder = model.feature_extractor
    # nonzero-mean input, so the first layer's statistics are not trivially centred
    x = 0.3 * torch.randn(3, samples, generator=torch.Generator().manual_seed(samples)) + 0.05
    with torch.inference_mode():
        ref = encoder(x)
        got = gemm_features.features(encoder, x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * max(1.0, ref.abs().max().item()))


def test_bf16_stays_close_to_fp32():
    """Under bf16 autocast the GEMMs and the normalisation run in bf16 (fp32 accumulation and
    fp32 statistics): as close to fp32 as the module's own bf16 path."""
    encoder = _hubert(conv_dim=(64,) * 7).feature_extractor
    x = 0.1 * torch.randn(2, 24000, generator=torch.Generator().manual_seed(0))
    cos = torch.nn.functional.cosine_similarity
    with torch.inference_mode():
        ref = encoder(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = gemm_features.features(encoder, x)
            module = encoder(x)
    assert got.dtype == torch.bfloat16
    ours = cos(got.float().flatten(1), ref.flatten(1)).min().item()
    theirs = cos(module.float().flatten(1), ref.flatten(1)).min().item()
    assert ours > 0.999
    assert ours > theirs - 1e-3


def test_installed_model_matches_and_training_keeps_the_module(monkeypatch):
    model, x = _hubert(), 0.1 * torch.randn(2, 16000)
    with torch.inference_mode():
        ref = model(x, output_hidden_states=True).hidden_states
    keys = set(model.state_dict())
    assert gemm_features.install(model, "gemm")
    assert gemm_features.install(model, "gemm")  # idempotent
    assert set(model.state_dict()) == keys
    with torch.inference_mode():
        got = model(x, output_hidden_states=True).hidden_states
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    calls = []
    monkeypatch.setattr(gemm_features, "features", lambda *a: calls.append(1))
    model.train()
    model(0.1 * torch.randn(1, 8000)).last_hidden_state.sum().backward()
    assert calls == []
    assert model.feature_extractor.conv_layers[1].conv.weight.grad is not None


def test_wav2vec2_feature_encoder_is_supported_too():
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).eval()
    x = 0.1 * torch.randn(2, 8000)
    with torch.inference_mode():
        ref = model.feature_extractor(x)
        assert gemm_features.install(model, "gemm")
        torch.testing.assert_close(model.feature_extractor(x), ref, rtol=1e-4, atol=1e-5)


def test_module_mode_and_unsupported_layers_leave_the_model_alone(monkeypatch):
    model = _hubert()
    assert not gemm_features.install(model, "module")
    monkeypatch.setenv("EMBENCH_FEATURE_ENCODER", "module")
    assert not gemm_features.install(model)
    assert not getattr(model.feature_extractor.forward, "embench_gemm", False)
    grouped = _hubert()
    grouped.feature_extractor.conv_layers[0].layer_norm = torch.nn.GroupNorm(4, 16)
    assert not gemm_features.supports(grouped.feature_extractor)
    assert not gemm_features.install(grouped, "gemm")


def test_bad_mode_and_short_input_say_what_is_wrong(monkeypatch):
    monkeypatch.setenv("EMBENCH_FEATURE_ENCODER", "fast")
    with pytest.raises(ValueError,
                       match="EMBENCH_FEATURE_ENCODER must be one of auto, gemm, fused, module"):
        gemm_features.install(_hubert())
    with pytest.raises(ValueError, match="shorter than the first conv"):
        gemm_features.features(_hubert().feature_extractor, torch.zeros(1, 5))
