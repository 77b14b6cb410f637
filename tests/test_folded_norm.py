"""The first CNN layer with its GroupNorm folded into per-window filters equals the modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import HubertConfig, HubertModel

from embench_plugins import folded_norm
from tests.test_mert import TINY


def _layer(bias: bool = False, seed: int = 0) -> tuple[torch.nn.Conv1d, torch.nn.GroupNorm]:
    torch.manual_seed(seed)
    conv = torch.nn.Conv1d(1, 64, 10, 5, bias=bias)
    norm = torch.nn.GroupNorm(64, 64, affine=True)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    return conv, norm


def _reference(x, conv, norm):
    bias = None if conv.bias is None else conv.bias.double()
    y = F.conv1d(x.double(), conv.weight.double(), bias, conv.stride[0])
    return F.group_norm(y, norm.num_groups, norm.weight.double(), norm.bias.double(), norm.eps)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("samples", [400, 4001, 24_000])
def test_folded_layer_equals_conv_then_groupnorm(bias, samples):
    conv, norm = _layer(bias)
    x = torch.randn(3, 1, samples, generator=torch.Generator().manual_seed(1))
    x[1] *= 40.0  # windows of very different loudness: statistics are per window
    with torch.inference_mode():
        got = folded_norm.folded_conv_groupnorm(x, conv, norm)
    ref = _reference(x, conv, norm)
    assert got.shape == ref.shape and got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-4)


def test_a_channel_the_audio_barely_excites_is_as_exact_as_the_modules():
    """Smooth (low-pass) audio through a high-pass filter: a variance of ~1e-10 against terms of
    w^T Cov w near 1, which float32 statistics would round away (0.017 off, measured)."""
    conv, norm = _layer()
    x = torch.randn(2, 1, 24_000, generator=torch.Generator().manual_seed(3)).cumsum(-1)
    x = x.cumsum(-1)
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)
    with torch.no_grad():
        conv.weight[0, 0] = 5.0 * torch.tensor([1.0, -3, 3, -1, 0, 0, 0, 0, 0, 0])
    ref = _reference(x, conv, norm)
    with torch.inference_mode():
        ours = (folded_norm.folded_conv_groupnorm(x, conv, norm).double() - ref).abs().max()
        modules = (norm(conv(x)).double() - ref).abs().max()
    assert ours <= 2 * modules + 1e-5


def test_bf16_is_as_close_to_float64_as_the_modules_in_bf16():
    conv, norm = _layer()
    x = torch.randn(2, 1, 24_000, generator=torch.Generator().manual_seed(2))
    ref = _reference(x, conv, norm)
    conv, norm = conv.bfloat16(), norm.bfloat16()
    with torch.inference_mode():
        ours = folded_norm.folded_conv_groupnorm(x.bfloat16(), conv, norm)
        modules = norm(conv(x.bfloat16()))
    assert ours.dtype == torch.bfloat16

    def error(y):
        return ((y.double() - ref).norm() / ref.norm()).item()

    assert error(ours) < 1.2 * error(modules) + 1e-4
    conv, norm = _layer()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert folded_norm.folded_conv_groupnorm(x, conv, norm).dtype == torch.bfloat16


def _tiny_hubert(**overrides) -> HubertModel:
    torch.manual_seed(0)
    return HubertModel(HubertConfig(**{**TINY, **overrides})).eval()


def test_installed_model_matches_at_inference_and_training_is_untouched(monkeypatch):
    model, x = _tiny_hubert(), 0.1 * torch.randn(2, 16000)
    with torch.inference_mode():
        ref = model(x, output_hidden_states=True).hidden_states
    assert folded_norm.install(model, "folded") == ["feature_extractor.conv_layers.0"]
    assert folded_norm.install(model, "folded") == []  # idempotent
    with torch.inference_mode():
        got = model(x, output_hidden_states=True).hidden_states
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    calls = []
    monkeypatch.setattr(folded_norm, "folded_conv_groupnorm",
                        lambda *a: calls.append(1))
    model.train()
    model(x).last_hidden_state.sum().backward()
    assert calls == []
    assert model.feature_extractor.conv_layers[0].conv.weight.grad is not None


def test_layer_norm_models_and_the_module_mode_are_left_alone(monkeypatch):
    assert folded_norm.install(_tiny_hubert(feat_extract_norm="layer",
                                            do_stable_layer_norm=True), "folded") == []
    assert folded_norm.install(_tiny_hubert(), "module") == []
    monkeypatch.setenv("EMBENCH_FIRST_LAYER", "module")
    assert folded_norm.install(_tiny_hubert()) == []
    monkeypatch.setenv("EMBENCH_FIRST_LAYER", "fused")
    with pytest.raises(ValueError, match="folded, module"):
        folded_norm.install(_tiny_hubert())
