"""The inference route of a post-LN wav2vec2/HuBERT encoder layer with fewer memory passes
(``EMBENCH_ENCODER_LAYER``; ``auto`` by default): q, k and v as one GEMM, so the hidden states
are read once rather than three times, and each residual add fused into the LayerNorm after it
(``torch.ops.embench.add_layer_norm`` of :mod:`embench_plugins.fused_ops`: the sum is formed in
fp32 and never stored). By ``benchmarks/roofline.py``'s count, 8 MB per audio-second of
MERT-95M fewer. Stable-layer-norm (pre-LN) layers, MERT-330M's, keep their modules.

Like :mod:`embench_plugins.fused_routes`: only inference takes it (a layer keeps its own forward
when gradients are recorded, in train mode, with a mask or attention outputs asked for, and
when attention is not SDPA), and ``auto`` times it on CUDA against the module and takes it only
where it is faster and agrees (:mod:`embench_plugins.route_choice`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from embench_plugins.fast_conv import parameter_state

if TYPE_CHECKING:
    import torch

    from embench_plugins import route_choice

#: Post-LN encoder layers (``layer_norm(residual + branch)`` after attention and after the FFN)
#: that :func:`encoder_layer` reproduces; stable-layer-norm (pre-LN) layers keep their modules.
POST_NORM_LAYERS = ("HubertEncoderLayer", "Wav2Vec2EncoderLayer")
LAYER_MODES = ("auto", "module", "fused")


def supports_layer(layer: torch.nn.Module) -> bool:
    """A post-LN Wav2Vec2/HuBERT encoder layer with biased q/k/v Linears and affine norms."""
    import torch

    if type(layer).__name__ not in POST_NORM_LAYERS:
        return False
    attn = getattr(layer, "attention", None)
    projections = [getattr(attn, p, None) for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
    norms = [getattr(layer, n, None) for n in ("layer_norm", "final_layer_norm")]
    return (all(isinstance(p, torch.nn.Linear) and p.bias is not None for p in projections)
            and all(isinstance(n, torch.nn.LayerNorm) and n.weight is not None
                    and n.bias is not None for n in norms)
            and all(hasattr(attn, a) for a in ("num_heads", "head_dim", "scaling"))
            and hasattr(layer, "feed_forward"))


def runs_sdpa(attn: torch.nn.Module) -> bool:
    """Whether an attention block computes scaled-dot-product attention through SDPA, as the
    fused layer does (not eager attention: the seed-style baseline's)."""
    config = getattr(attn, "config", None)
    if config is not None:  # transformers 5: one class, the implementation in the config
        return getattr(config, "_attn_implementation", None) == "sdpa"
    return "Sdpa" in type(attn).__name__  # older releases: a class per implementation


class _ProjectionCache:
    """The q, k and v Linears of one attention block as one ``[3 * D, D]`` weight and bias,
    concatenated again only when a parameter changes (moved, cast or trained)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: tuple[torch.Tensor, torch.Tensor] | None = None

    def get(self, attn: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        linears = (attn.q_proj, attn.k_proj, attn.v_proj)
        if torch.compiler.is_compiling():  # a graph computes it; the lookup would break it
            return _concatenated(linears)
        key = parameter_state(p for lin in linears for p in (lin.weight, lin.bias))
        if key != self.key:
            self.value, self.key = _concatenated(linears), key
        return self.value


def _concatenated(linears) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    return (torch.cat([lin.weight for lin in linears]),
            torch.cat([lin.bias for lin in linears]))


def add_norm(residual: torch.Tensor, branch: torch.Tensor,
             norm: torch.nn.LayerNorm) -> torch.Tensor:
    """``norm(residual + branch)`` as one operator: the sum is never stored."""
    import torch

    from embench_plugins import fused_ops  # noqa: F401  (registers torch.ops.embench)

    width = residual.shape[-1]
    out = torch.ops.embench.add_layer_norm(residual.reshape(-1, width),
                                           branch.reshape(-1, width), norm.weight, norm.bias,
                                           norm.eps)
    return out.view(residual.shape)


def encoder_layer(layer: torch.nn.Module, hidden: torch.Tensor,
                  cache: _ProjectionCache | None = None) -> torch.Tensor:
    """A post-LN encoder layer at inference (no mask, dropouts off) with q, k and v as one GEMM
    (the hidden states read once, not three times) and each residual add fused into the
    LayerNorm after it (``roofline.py``: 8 MB per audio-second of MERT-95M fewer). The FFN is
    the block's own forward, so its route (``fused_routes.install_ffn``) still applies."""
    import torch.nn.functional as F

    attn = layer.attention
    batch, frames, width = hidden.shape
    weight, bias = (cache or _ProjectionCache()).get(attn)
    qkv = F.linear(hidden, weight, bias).view(batch, frames, 3, attn.num_heads, attn.head_dim)
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, frames, dim]
    mixed = F.scaled_dot_product_attention(query, key, value, scale=attn.scaling)
    mixed = attn.out_proj(mixed.transpose(1, 2).reshape(batch, frames, width))
    hidden = add_norm(hidden, mixed, layer.layer_norm)
    return add_norm(hidden, layer.feed_forward(hidden), layer.final_layer_norm)


def install_layers(model: torch.nn.Module, mode: str | None = None) -> list[str]:
    """Route every :func:`supports_layer` encoder layer through :func:`encoder_layer` at
    inference (``fused``), or (``auto``, the default) through whichever of that and the
    module one :class:`route_choice.RouteChoice`, shared by all layers, times fastest on CUDA
    (the module elsewhere). ``EMBENCH_ENCODER_LAYER`` (one of :data:`LAYER_MODES`) overrides
    ``mode``; returns the names of the wrapped layers. A layer keeps its own forward when
    gradients are recorded, in train mode, with an attention mask or attention outputs asked
    for, and when the model's attention is not SDPA (the seed-style baseline's eager)."""
    from embench_plugins import route_choice

    mode = mode or os.environ.get("EMBENCH_ENCODER_LAYER", LAYER_MODES[0])
    if mode not in LAYER_MODES:
        raise ValueError(f"EMBENCH_ENCODER_LAYER must be one of {', '.join(LAYER_MODES)}, "
                         f"not {mode!r}")
    if mode == "module":
        return []
    choice = None
    if mode == "auto":  # candidates take (hidden, layer, the layer's own forward, its cache)
        choice = route_choice.RouteChoice(
            "encoder layer: one q/k/v GEMM, add + LayerNorm fused",
            {"module": lambda h, layer, own, cache: _hidden(own(h)),
             "fused": lambda h, layer, own, cache: encoder_layer(layer, h, cache)}, "module")
    wrapped = [name for name, module in model.named_modules()
               if supports_layer(module) and _wrap_layer(module, choice)]
    if choice is not None and wrapped:
        route_choice.attach(model, choice)
    return wrapped


def _wrap_layer(layer: torch.nn.Module, choice: route_choice.RouteChoice | None) -> bool:
    """Give ``layer`` the inference forward of :func:`install_layers` (once)."""
    import torch

    own = layer.forward
    if getattr(own, "embench_fused_layer", False):
        return False
    cache = _ProjectionCache()
    # How ``own`` returns the states (older releases: a tuple led by them; 5.0: 2 entries),
    # learnt now from one frame, eagerly: never inside a graph ``torch.compile`` traces later
    norm = layer.layer_norm
    with torch.no_grad():
        sample = own(norm.weight.new_zeros(1, 1, norm.normalized_shape[0]))

    def forward(hidden_states: torch.Tensor, *args, **kwargs):
        # (attention_mask, output_attentions) by keyword, or positionally (older releases'
        # gradient checkpointing)
        mask = args[0] if args else kwargs.get("attention_mask")
        attentions = args[1] if len(args) > 1 else kwargs.get("output_attentions")
        if (torch.is_grad_enabled() or layer.training or mask is not None or attentions
                or not runs_sdpa(layer.attention)):
            return own(hidden_states, *args, **kwargs)
        if choice is None:
            out = encoder_layer(layer, hidden_states, cache)
        else:
            out = choice(hidden_states, layer, own, cache)
        return _shaped_like(sample, out)

    forward.embench_fused_layer = True
    layer.forward = forward
    return True


def _hidden(out):
    """A layer's hidden states, whether its forward returns them or a tuple led by them."""
    return out[0] if isinstance(out, tuple) else out


def _shaped_like(own_output, hidden: torch.Tensor):
    """``hidden`` returned the way the layer's own forward returns its states: bare, or first
    in a tuple whose other entries (attention weights, not asked for) are ``None``."""
    if isinstance(own_output, tuple):
        return (hidden, *([None] * (len(own_output) - 1)))
    return hidden
