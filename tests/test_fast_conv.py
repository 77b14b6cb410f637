"""Unfold + matmul convolutions equal torch's, and the GPU inference path leaves training alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import HubertConfig, HubertModel

from embench_plugins import fast_conv

SHAPES = [  # (in, out, kernel, stride, padding, groups, length): the convs of the base models
    (768, 768, 128, 1, 64, 16, 374),  # positional conv
    (512, 512, 3, 2, 0, 1, 999),  # feature encoder, middle layers
    (1, 512, 10, 5, 0, 1, 4000),  # feature encoder, first layer
    (64, 64, 2, 2, 0, 1, 33),  # feature encoder, last layers (even kernel)
]


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "stride", "pad", "groups", "length"), SHAPES)
def test_unfold_conv1d_equals_conv1d(c_in, c_out, kernel, stride, pad, groups, length):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, c_in, length, generator=gen)
    w = torch.randn(c_out, c_in // groups, kernel, generator=gen)
    b = torch.randn(c_out, generator=gen)
    ref = F.conv1d(x, w, b, stride, pad, groups=groups)
    got = fast_conv.unfold_conv1d(x, w, b, stride, pad, groups)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_chunks_cover_the_whole_batch(monkeypatch):
    monkeypatch.setattr(fast_conv, "CHUNK_ELEMENTS", 1)  # one batch item per chunk
    x, w = torch.randn(5, 4, 20), torch.randn(6, 2, 3)
    torch.testing.assert_close(fast_conv.unfold_conv1d(x, w, None, 1, 1, 2),
                               F.conv1d(x, w, None, 1, 1, groups=2))


def _tiny_hubert() -> HubertModel:
    torch.manual_seed(0)
    return HubertModel(HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).eval()


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "stride", "pad", "groups", "length"), SHAPES)
def test_channels_last_conv1d_equals_conv1d(c_in, c_out, kernel, stride, pad, groups, length):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, c_in, length, generator=gen)
    w = torch.randn(c_out, c_in // groups, kernel, generator=gen)
    ref = F.conv1d(x, w, None, stride, pad, groups=groups)
    torch.testing.assert_close(fast_conv.channels_last_conv1d(x, w, None, stride, pad, groups),
                               ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("which", ["pos", "all", "cl"])
def test_installed_model_matches_at_inference(which):
    model, x = _tiny_hubert(), 0.1 * torch.randn(2, 16000)
    with torch.inference_mode():
        ref = model(x, output_hidden_states=True).hidden_states
    wrapped = fast_conv.install(model, which)
    assert any("pos_conv_embed" in n for n in wrapped)
    assert len(wrapped) == (1 if which == "pos" else 8)
    assert set(model.state_dict()) == set(_tiny_hubert().state_dict())  # checkpoints unchanged
    with torch.inference_mode():
        got = model(x, output_hidden_states=True).hidden_states
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert fast_conv.install(model, which) == []  # idempotent


def test_training_keeps_the_original_convolution(monkeypatch):
    model = _tiny_hubert()
    fast_conv.install(model, "all")
    calls = []
    monkeypatch.setattr(fast_conv, "unfold_conv1d", lambda *a, **k: calls.append(1))
    model.train()
    model(0.1 * torch.randn(1, 8000)).last_hidden_state.sum().backward()
    assert calls == []
    assert model.encoder.pos_conv_embed.conv.parametrizations.weight.original1.grad is not None


def test_unknown_choice_is_an_error(monkeypatch):
    monkeypatch.setenv("EMBENCH_UNFOLD_CONV", "fast")
    with pytest.raises(ValueError, match="pos, all, cl or off"):
        fast_conv.install(_tiny_hubert())
