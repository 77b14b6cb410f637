"""The fused routes (CNN layers and the FFN's first GEMM with their GELU as one operator) give
the modules' results; the operators' reference implementations define what the Triton kernels
compute (``test_triton_kernels`` checks the kernels against them)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

from embench_plugins import fused_ops, fused_routes, gemm_features  # noqa: F401 (ops)
from tests.test_mert import TINY

OPS = torch.ops.embench


def _hubert(**overrides) -> HubertModel:
    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # a non-trivial affine GroupNorm, so the fold is exercised
        norm = model.feature_extractor.conv_layers[0].layer_norm
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    return model


def _conv_case(kernel: int, stride: int, bias: bool, rows: int = 40, batch: int = 3):
    gen = torch.Generator().manual_seed(kernel * 10 + stride)
    channels, out_channels = 24, 20
    x = torch.randn(batch * rows + 4, channels, generator=gen)
    x[batch * rows:] = 0  # the slack rows a producer leaves
    weight = 0.2 * torch.randn(out_channels, channels, kernel, generator=gen)
    b = torch.randn(out_channels, generator=gen) if bias else None
    return x, weight, b


@pytest.mark.parametrize(("kernel", "stride", "bias"), [(3, 2, False), (2, 2, True), (3, 1, True)])
def test_gemm_act_on_overlapping_rows_is_a_strided_conv_with_gelu(kernel, stride, bias):
    batch, rows = 3, 40
    x, weight, b = _conv_case(kernel, stride, bias, rows, batch)
    w_kn = weight.permute(2, 1, 0).reshape(-1, weight.shape[0]).contiguous()
    out = OPS.gemm_act(x, w_kn, b, stride * x.shape[1], batch * rows // stride, 5, True)
    assert out.shape == (batch * rows // stride + 5, weight.shape[0])
    assert torch.equal(out[batch * rows // stride:], torch.zeros(5, weight.shape[0]))
    ref = F.gelu(F.conv1d(x[:batch * rows].view(batch, rows, -1).transpose(1, 2).double(),
                          weight.double(), None if b is None else b.double(), stride=stride))
    got = out[:batch * rows // stride].view(batch, rows // stride, -1)[:, :ref.shape[2]]
    torch.testing.assert_close(got.transpose(1, 2).double(), ref, rtol=0, atol=1e-5)


def test_gemm_act_as_a_linear_layer_and_without_activation():
    gen = torch.Generator().manual_seed(3)
    a, w, b = (torch.randn(37, 24, generator=gen), torch.randn(50, 24, generator=gen),
               torch.randn(50, generator=gen))
    torch.testing.assert_close(OPS.gemm_act(a, w.t(), b, 24, 37, 0, True),
                               F.gelu(F.linear(a, w, b)))
    torch.testing.assert_close(OPS.gemm_act(a, w.t(), None, 24, 37, 0, False), a @ w.t())


def test_gemm_act_refuses_rows_past_the_buffer():
    x = torch.zeros(10, 4)
    with pytest.raises(ValueError, match="slack rows"):
        OPS.gemm_act(x, torch.zeros(12, 3), None, 8, 5, 0, True)  # row 4 reads elements 32..43


def test_first_layer_act_reads_taps_from_the_waveform_and_zero_past_its_end():
    gen = torch.Generator().manual_seed(4)
    wave, filters, shift = (torch.randn(2, 103, generator=gen),
                            torch.randn(2, 16, 7, generator=gen), torch.randn(2, 7, generator=gen))
    rows = 22  # the last rows' taps run past sample 103
    out = OPS.first_layer_act(wave, filters, shift, 5, rows, 3, True)
    assert out.shape == (2 * rows + 3, 7) and torch.equal(out[-3:], torch.zeros(3, 7))
    ref = torch.empty(2, rows, 7, dtype=torch.float64)
    for b in range(2):
        for t in range(rows):
            taps = [float(wave[b, 5 * t + j]) if 5 * t + j < 103 else 0.0 for j in range(16)]
            ref[b, t] = torch.tensor(taps, dtype=torch.float64) @ filters[b].double() + shift[b]
    torch.testing.assert_close(out[:2 * rows].view(2, rows, 7).double(), F.gelu(ref),
                               rtol=0, atol=1e-5)


def test_operators_register_fake_kernels_and_flops():
    x, weight, _ = _conv_case(3, 2, False)
    w_kn = weight.permute(2, 1, 0).reshape(-1, weight.shape[0]).contiguous()
    cases = [(OPS.gemm_act, (x, w_kn, None, 48, 60, 8, True), 2 * 60 * 72 * 20),
             (OPS.first_layer_act, (torch.randn(2, 300), torch.randn(2, 16, 8),
                                    torch.randn(2, 8), 5, 58, 2, True), 2 * 2 * 58 * 16 * 8)]
    for op, args, flops in cases:
        result = torch.library.opcheck(op, args)
        assert set(result.values()) == {"SUCCESS"}, result
        with FlopCounterMode(display=False) as counter:
            op(*args)
        assert counter.get_total_flops() == flops


@pytest.mark.parametrize("samples", [400, 4_001, 24_000])
def test_fused_feature_encoder_equals_the_modules(samples):
    model = _hubert()
    x = 0.1 * torch.randn(3, samples, generator=torch.Generator().manual_seed(samples))
    x[1] *= 30.0  # per-window statistics
    with torch.inference_mode():
        ref = model.feature_extractor(x)
        got = fused_routes.features(model.feature_extractor, x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_fused_routes_in_bf16_stay_as_close_to_fp32_as_the_modules():
    def install(model):
        assert gemm_features.install(model, "fused") and fused_routes.install_ffn(model, "fused")

    bf16_as_close_to_fp32(_hubert(), install, seed=9)


def bf16_as_close_to_fp32(model, install, seed: int) -> tuple[torch.Tensor, ...]:
    """Per hidden state of ``model`` with bf16 weights: with the routes ``install`` puts in,
    as close to the fp32 result as the modules' own bf16 result. Returns the routed states."""
    x = 0.1 * torch.randn(2, 16_000, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = model(x, output_hidden_states=True).hidden_states
        model.to(torch.bfloat16)
        theirs = model(x.bfloat16(), output_hidden_states=True).hidden_states
        install(model)
        ours = model(x.bfloat16(), output_hidden_states=True).hidden_states
    for r, a, b in zip(ref, theirs, ours, strict=True):
        cos_theirs = F.cosine_similarity(a.float().flatten(1), r.flatten(1)).min().item()
        cos_ours = F.cosine_similarity(b.float().flatten(1), r.flatten(1)).min().item()
        assert cos_ours > 0.999 and cos_ours > cos_theirs - 1e-3
    return ours


def test_installed_routes_match_and_training_keeps_the_modules(monkeypatch):
    model, x = _hubert(), 0.1 * torch.randn(2, 16_000)
    with torch.inference_mode():
        ref = model(x, output_hidden_states=True).hidden_states
    keys = set(model.state_dict())
    monkeypatch.setenv("EMBENCH_FEATURE_ENCODER", "fused")
    monkeypatch.setenv("EMBENCH_FFN", "fused")
    assert gemm_features.install(model)
    assert fused_routes.install_ffn(model) == [f"encoder.layers.{i}.feed_forward"
                                               for i in range(TINY["num_hidden_layers"])]
    assert fused_routes.install_ffn(model) == []  # idempotent
    assert set(model.state_dict()) == keys
    with torch.inference_mode():
        got = model(x, output_hidden_states=True).hidden_states
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

    calls = []
    monkeypatch.setattr(fused_routes, "features", lambda *a: calls.append(1))
    monkeypatch.setattr(fused_routes, "feed_forward", lambda *a: calls.append(2))
    model.train()
    model(0.1 * torch.randn(1, 8000)).last_hidden_state.sum().backward()
    assert calls == []
    assert model.encoder.layers[0].feed_forward.intermediate_dense.weight.grad is not None


def test_autocast_runs_the_fused_gemm_in_autocasts_dtype():
    model = _hubert()
    ff = model.encoder.layers[0].feed_forward
    h = torch.randn(2, 5, TINY["hidden_size"])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = ff(h)
        got = fused_routes.feed_forward(ff, h)
    assert got.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref.float(), rtol=0.05, atol=0.02)


def test_models_the_kernels_do_not_describe_keep_their_modules(monkeypatch):
    layer_norm_cnn = _hubert(feat_extract_norm="layer", conv_bias=True)
    assert not fused_routes.supports_features(layer_norm_cnn.feature_extractor)
    assert not gemm_features.install(layer_norm_cnn, "fused")
    tanh_gelu = _hubert(hidden_act="gelu_new", feat_extract_activation="gelu_new")
    assert not fused_routes.supports_features(tanh_gelu.feature_extractor)
    assert fused_routes.install_ffn(tanh_gelu, "fused") == []
    assert fused_routes.install_ffn(_hubert(), "module") == []
    torch.manual_seed(0)
    wav2vec2 = Wav2Vec2Model(Wav2Vec2Config(**TINY)).eval()  # the same CNN: supported
    x = 0.1 * torch.randn(2, 8000)
    with torch.inference_mode():
        ref = wav2vec2.feature_extractor(x)
        assert gemm_features.install(wav2vec2, "fused")
        torch.testing.assert_close(wav2vec2.feature_extractor(x), ref, rtol=1e-4, atol=1e-4)
    monkeypatch.setenv("EMBENCH_FFN", "triton")
    with pytest.raises(ValueError, match="EMBENCH_FFN must be one of auto, module, fused"):
        fused_routes.install_ffn(_hubert())
    with pytest.raises(ValueError, match="shorter than the first conv"):
        fused_routes.features(_hubert().feature_extractor, torch.zeros(1, 5))
