"""The fused encoder-layer route (q, k and v as one GEMM; each residual add fused into the
LayerNorm after it) gives the modules' hidden states, and only at inference; the reference of
``torch.ops.embench.add_layer_norm`` defines what its Triton kernel computes
(``test_triton_kernels`` checks the kernel against it)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

from embench_plugins import fused_layers, fused_ops  # noqa: F401 (fused_ops: the ops)
from tests.test_fused_routes import bf16_as_close_to_fp32
from tests.test_mert import TINY

LAYERS = [f"encoder.layers.{i}" for i in range(TINY["num_hidden_layers"])]


def _model(kind=HubertModel, config=HubertConfig, attention="sdpa", **overrides):
    torch.manual_seed(0)
    model = kind(config(**{**TINY, **overrides}, attn_implementation=attention)).eval()
    with torch.no_grad():  # non-trivial norms, so a swapped weight or bias would show
        for layer in model.encoder.layers:
            for norm in (layer.layer_norm, layer.final_layer_norm):
                norm.weight.normal_(1.0, 0.3)
                norm.bias.normal_(0.0, 0.3)
    return model


def _counted(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = fused_layers.encoder_layer
    monkeypatch.setattr(fused_layers, "encoder_layer",
                        lambda *a: calls.append(1) or real(*a))
    return calls


def test_add_layer_norm_is_the_layer_norm_of_the_fp32_sum():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(37, 24, generator=gen), torch.randn(37, 24, generator=gen)
    w, b = torch.randn(24, generator=gen), torch.randn(24, generator=gen)
    ops = torch.ops.embench
    torch.testing.assert_close(ops.add_layer_norm(x, y, w, b, 1e-5),
                               F.layer_norm(x + y, (24,), w, b, 1e-5))
    # the residual stream's dtype is kept: fp32 under autocast (a bf16 branch), bf16 otherwise
    mixed = ops.add_layer_norm(x, y.bfloat16(), w, b, 1e-5)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, F.layer_norm(x + y.bfloat16().float(), (24,), w, b, 1e-5))
    low = ops.add_layer_norm(x.bfloat16(), y.bfloat16(), w.bfloat16(), b.bfloat16(), 1e-5)
    exact = F.layer_norm(x.bfloat16().float() + y.bfloat16().float(), (24,),
                         w.bfloat16().float(), b.bfloat16().float(), 1e-5)
    assert low.dtype == torch.bfloat16 and torch.equal(low, exact.bfloat16())  # one rounding
    torch.library.opcheck(ops.add_layer_norm.default, (x, y, w, b, 1e-5))


@pytest.mark.parametrize(("kind", "config"), [(HubertModel, HubertConfig),
                                              (Wav2Vec2Model, Wav2Vec2Config)])
def test_fused_layers_give_every_hidden_state_of_the_modules(kind, config, monkeypatch):
    model, x = _model(kind, config), 0.1 * torch.randn(3, 16_000)
    with torch.inference_mode():
        ref = model(x, output_hidden_states=True).hidden_states
    keys = set(model.state_dict())
    assert fused_layers.install_layers(model, "fused") == LAYERS
    assert fused_layers.install_layers(model, "fused") == []  # idempotent
    assert set(model.state_dict()) == keys
    calls = _counted(monkeypatch)
    with torch.inference_mode():
        got = model(x, output_hidden_states=True).hidden_states
    assert len(calls) == len(LAYERS)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fused_layers_in_bf16_stay_as_close_to_fp32_as_the_modules():
    ours = bf16_as_close_to_fp32(_model(), lambda m: fused_layers.install_layers(m, "fused"), 4)
    assert {b.dtype for b in ours} == {torch.bfloat16}


def test_training_masks_and_eager_attention_keep_the_modules(monkeypatch):
    model, x = _model(layerdrop=0.0), 0.1 * torch.randn(2, 16_000)  # no layer skipped
    fused_layers.install_layers(model, "fused")
    calls = _counted(monkeypatch)
    model.train()
    model(x).last_hidden_state.sum().backward()
    assert model.encoder.layers[0].attention.q_proj.weight.grad is not None
    model.eval()
    eager = _model(attention="eager")  # the seed-style baseline's attention
    fused_layers.install_layers(eager, "fused")
    with torch.inference_mode():
        mask = torch.ones(2, 16_000, dtype=torch.long)
        mask[1, 8000:] = 0
        model(x, attention_mask=mask)
        eager(x)
    assert calls == []
    with torch.inference_mode():
        model(x)
    assert len(calls) == len(LAYERS)


def test_pre_norm_layers_and_unknown_settings(monkeypatch):
    assert fused_layers.install_layers(_model(do_stable_layer_norm=True), "fused") == []
    assert fused_layers.install_layers(_model(), "module") == []
    monkeypatch.setenv("EMBENCH_ENCODER_LAYER", "triton")
    with pytest.raises(ValueError, match="EMBENCH_ENCODER_LAYER must be one of auto, module"):
        fused_layers.install_layers(_model())


def test_a_layer_whose_forward_returns_a_tuple_gets_one_back():
    """Older transformers releases return ``(hidden_states, attention_weights)`` from a layer
    (5.0) or ``(hidden_states,)`` (4.x); the route answers in the layer's own shape."""
    model = _model()
    layer = model.encoder.layers[0]
    plain = layer.forward
    layer.forward = lambda h, *args, **kwargs: (plain(h, *args, **kwargs), None)
    assert fused_layers.install_layers(model, "fused") == LAYERS
    h = torch.randn(2, 7, TINY["hidden_size"], generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        out = layer(h)
        assert isinstance(out, tuple) and len(out) == 2 and out[1] is None
        torch.testing.assert_close(out[0], plain(h), rtol=1e-5, atol=1e-5)
        assert isinstance(model.encoder.layers[1](h), torch.Tensor)  # an unchanged layer
