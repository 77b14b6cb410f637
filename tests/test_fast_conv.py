"""Unfold + matmul convolutions equal torch's, and the GPU inference path leaves training alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import HubertConfig, HubertModel

from embench_plugins import fast_conv
from tests.test_mert import TINY

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
    return HubertModel(HubertConfig(**TINY)).eval()


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "stride", "pad", "groups", "length"), SHAPES)
def test_channels_last_conv1d_equals_conv1d(c_in, c_out, kernel, stride, pad, groups, length):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, c_in, length, generator=gen)
    w = torch.randn(c_out, c_in // groups, kernel, generator=gen)
    ref = F.conv1d(x, w, None, stride, pad, groups=groups)
    torch.testing.assert_close(fast_conv.channels_last_conv1d(x, w, None, stride, pad, groups),
                               ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("which", ["fft", "pos", "all", "cl"])
def test_installed_model_matches_at_inference(which):
    model, x = _tiny_hubert(), 0.1 * torch.randn(2, 16000)
    with torch.inference_mode():
        ref = model(x, output_hidden_states=True).hidden_states
    wrapped = fast_conv.install(model, which)
    assert any("pos_conv_embed" in n for n in wrapped)
    assert len(wrapped) == (1 if which in ("fft", "pos") else 8)
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
    with pytest.raises(ValueError, match="fft, pos, all, cl, off"):
        fast_conv.install(_tiny_hubert())


FFT_SHAPES = [  # (channels, kernel, padding, groups, length): stride 1 only
    (768, 128, 64, 16, 374),  # positional conv of the base models (5 s at 75 Hz, minus one)
    (12, 5, 2, 3, 40),  # odd kernel
    (8, 4, 3, 2, 9),  # padding wider than half the kernel
    (6, 3, 0, 1, 7),  # no padding, no groups
]


@pytest.mark.parametrize(("channels", "kernel", "pad", "groups", "length"), FFT_SHAPES)
def test_fft_conv1d_equals_conv1d(channels, kernel, pad, groups, length):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, channels, length, generator=gen)
    w = 0.1 * torch.randn(channels, channels // groups, kernel, generator=gen)
    b = torch.randn(channels, generator=gen)
    ref = F.conv1d(x.double(), w.double(), b.double(), 1, pad, groups=groups)
    got = fast_conv.fft_conv1d(x, w, b, 1, pad, groups)
    assert got.shape == ref.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5 * ref.abs().max().item())


def test_fft_conv1d_returns_the_dtype_bf16_code_expects():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 32, 50, generator=gen)
    w = 0.1 * torch.randn(32, 8, 16, generator=gen)
    ref = F.conv1d(x.double(), w.double(), None, 1, 8, groups=4)
    got = fast_conv.fft_conv1d(x.bfloat16(), w.bfloat16(), None, 1, 8, 4)  # bf16 weights
    assert got.dtype == torch.bfloat16
    assert F.cosine_similarity(got.double().flatten(), ref.flatten(), dim=0) > 0.9999
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 weights under autocast
        assert fast_conv.fft_conv1d(x, w, None, 1, 8, 4).dtype == torch.bfloat16


def test_fft_conv1d_refuses_strides_and_channel_mismatches():
    with pytest.raises(ValueError, match="stride 1"):
        fast_conv.fft_conv1d(torch.randn(1, 4, 20), torch.randn(4, 4, 3), None, stride=2)
    with pytest.raises(ValueError, match="channels"):
        fast_conv.fft_conv1d(torch.randn(1, 6, 20), torch.randn(4, 4, 3), None)


def test_fft_length_is_the_smallest_even_7_smooth_length():
    def smooth(m: int) -> bool:
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 700):
        got = fast_conv.fft_length(n)
        assert got >= n and got % 2 == 0 and smooth(got)
        assert not any(m % 2 == 0 and smooth(m) for m in range(max(2, n), got))
    assert fast_conv.fft_length(374 + 128) == 504


def test_cached_spectrum_follows_length_and_weights(monkeypatch):
    model = _tiny_hubert()
    conv = model.encoder.pos_conv_embed.conv
    fast_conv.install(model, "fft")
    spectra = []
    real = fast_conv.weight_spectrum
    monkeypatch.setattr(fast_conv, "weight_spectrum", lambda *a: spectra.append(1) or real(*a))

    def check(length: int) -> None:
        x = torch.randn(2, 32, length)
        with torch.inference_mode():
            got = conv(x)
        with torch.no_grad():
            ref = F.conv1d(x, conv.weight, conv.bias, 1, conv.padding[0], groups=conv.groups)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)

    check(30)
    check(30)
    assert len(spectra) == 1  # same length, same weights: reused
    check(41)
    assert len(spectra) == 2  # a new length needs its own spectrum
    with torch.no_grad():
        conv.parametrizations.weight.original1.mul_(2.0)  # weights changed in place
    check(41)
    assert len(spectra) == 3
    conv.to(torch.bfloat16)  # cast_weights: new tensors, a new spectrum
    x = torch.randn(2, 32, 41).bfloat16()
    with torch.inference_mode():
        got = conv(x)
    assert len(spectra) == 4 and got.dtype == torch.bfloat16
    ref = F.conv1d(x.double(), conv.weight.detach().double(), conv.bias.detach().double(), 1,
                   conv.padding[0], groups=conv.groups)
    assert F.cosine_similarity(got.double().flatten(), ref.flatten(), dim=0) > 0.9999
