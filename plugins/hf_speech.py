"""Shared base for Hubert / Wav2Vec2-style frame encoders (MERT-v1, wav2vec 2.0).

Both families are a strided CNN feature encoder, a convolutional positional embedding and a
transformer stack; embench wants every hidden state (CNN output + one per transformer layer) as
``[batch, layers, frames, dim]``. What differs between plugins is data (checkpoint id, sample
rate, window, config), so a plugin is a small subclass that fills in a :class:`VariantSpec`.

Design decisions, and why:

- **The plugin's config is the truth.** The model is always built from the encoder's own config
  (the variant's explicit architecture, or a ``config=`` override for tiny test models), because
  the hub config of MERT names a remote-code model type ("mert_model") that transformers cannot
  read, and because :class:`EncoderInfo` (layers, dims, frame rate) must be known before any
  weights load. A ``config.json`` found in ``--weights-dir`` is only cross-checked: a different
  model type or architecture is an error that names the mismatching fields, never a silent
  shape-mismatch or a randomly initialised layer.
- **info follows the config.** ``num_layers``, ``dims``, ``frame_rate`` and ``min_samples`` are
  derived from it, and an overridden architecture gets its own ``version`` so it can never share
  cache entries with the real model of the same name.
- **layerdrop is forced to 0.** transformers 5 records hidden states with hooks on the layers;
  a layer skipped by LayerDrop in train mode records nothing, which would break the fixed
  ``[B, L, F, D]`` contract while fine-tuning (checked: layerdrop 0.9 returned 0 states).
- **Normalisation happens in torch inside forward**, batched per row, exactly as
  ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does it, so the core's batching needs no
  processor and audio never leaves the device.

transformers and torch are imported lazily: ``embench list`` reads :class:`EncoderInfo` only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from embench import Encoder, EncoderInfo, MissingWeightsError
from embench_plugins.hf_loading import (
    HubRevision,
    attention_kwargs,
    load_model,
    local_checkpoint,
)

if TYPE_CHECKING:
    import torch

NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm: x.var() + 1e-7

#: The wav2vec 2.0 / HuBERT "base" architecture, written out rather than taken from the
#: transformers defaults so that a change of defaults upstream cannot change these encoders.
BASE_ARCH: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "conv_bias": False,
    "conv_dim": (512, 512, 512, 512, 512, 512, 512),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}

#: Fields of a checkpoint's config.json that must agree with the encoder's config: they change
#: parameter shapes, which layers exist, or what the last hidden state means. Fields absent from
#: the file (e.g. ``tie_last_hidden_states`` in the hub's MERT config) are not checked.
ARCH_KEYS = (*BASE_ARCH, "tie_last_hidden_states")

_MODEL_CLASSES: dict[tuple[str, tuple[str, ...]], type] = {}


@dataclass(frozen=True)
class VariantSpec:
    """One published checkpoint: where it lives and how its audio must be prepared."""

    name: str
    hf_id: str
    arch: Mapping[str, Any]
    sample_rate: int
    window_s: float | None
    description: str
    do_normalize: bool = True
    # The hub commit could not be confirmed offline; None means "whatever the cache holds".
    revision: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


def _cfg(config: Any, key: str) -> Any:
    """Read ``key`` from a transformers config object or a plain dict of config kwargs."""
    return config[key] if isinstance(config, Mapping) else getattr(config, key)


def _canon(value: Any) -> Any:
    """Comparable form: JSON stores tuples as lists."""
    return list(value) if isinstance(value, (list, tuple)) else value


def receptive_field(kernels: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Samples the CNN needs for one output frame (400 for the base architecture)."""
    field_, jump = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        field_ += (k - 1) * jump
        jump *= s
    return field_


def zero_mean_unit_var(waveforms: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Per-row ``(x - mean) / sqrt(var + eps)`` with the population variance, as
    ``Wav2Vec2FeatureExtractor(do_normalize=True)`` computes it for unpadded input."""
    import torch

    x = waveforms.float()
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, correction=0)
    return (x - mean) / torch.sqrt(var + eps)


class HFFrameEncoder(Encoder):
    """A Hubert/Wav2Vec2-style model returning all hidden states as ``[B, L, F, D]`` float32.

    Subclasses set :attr:`model_class_name`, :attr:`config_class_name`,
    :attr:`model_types` (accepted ``model_type`` values of a local config.json) and
    :attr:`ignore_unexpected` (checkpoint keys that are expected to be unused, e.g. pre-training
    heads), and pass a :class:`VariantSpec`. ``config`` overrides the architecture (tiny test
    models, or a user's own variant); info is then derived from it.
    """

    model_class_name: str = ""
    config_class_name: str = ""
    model_types: tuple[str, ...] = ()
    ignore_unexpected: tuple[str, ...] = ()
    license: str = ""
    citation: str = ""
    homepage: str = ""
    info_version = "1"
    #: Fine-tuning protocols may call :meth:`set_gradient_checkpointing` when this is True.
    supports_gradient_checkpointing = True
    #: Every op of these models runs in bf16 on CUDA (LayerNorm and GroupNorm accumulate in
    #: fp32 internally); the input normalisation stays fp32 in :meth:`forward`.
    supports_bf16_weights = True

    def __init__(self, spec: VariantSpec, config: Any | None = None) -> None:
        super().__init__()
        self.spec = spec
        self._config_override = config
        self.model: Any | None = None
        self.info = self._build_info(spec, config if config is not None else spec.arch)
        self.hub = HubRevision(spec.hf_id, spec.revision)

    # -- metadata -------------------------------------------------------------------------

    def _build_info(self, spec: VariantSpec, config: Any) -> EncoderInfo:
        strides = tuple(_cfg(config, "conv_stride"))
        kernels = tuple(_cfg(config, "conv_kernel"))
        version = self.info_version
        if self._config_override is not None:
            arch = {k: _canon(getattr(config, k, None)) for k in ARCH_KEYS}
            if arch != {k: _canon(spec.arch.get(k)) for k in ARCH_KEYS}:
                digest = hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()
                version = f"{version}+arch-{digest[:10]}"
        return EncoderInfo(
            name=spec.name,
            sample_rate=spec.sample_rate,
            num_layers=int(_cfg(config, "num_hidden_layers")) + 1,
            dims=(int(_cfg(config, "hidden_size")),),
            frame_rate=spec.sample_rate / math.prod(strides),
            description=spec.description,
            hf_id=spec.hf_id,
            revision=spec.revision,
            window_s=spec.window_s,
            hop_s=None,
            min_samples=receptive_field(kernels, strides),
            license=self.license,
            citation=self.citation,
            homepage=self.homepage,
            version=version,
            extra={
                "layers": "0: CNN features + positional conv (transformer input); "
                          "1..N: transformer layer outputs",
                "normalisation": ("zero-mean unit-variance per window" if spec.do_normalize
                                  else "none (raw waveform)"),
                **spec.extra,
            },
        )

    def model_config(self) -> Any:
        """A fresh transformers config for this encoder (override or the variant's arch)."""
        import transformers

        if self._config_override is not None:
            config = copy.deepcopy(self._config_override)
        else:
            config = getattr(transformers, self.config_class_name)(**self.spec.arch)
        config.layerdrop = 0.0  # see the module docstring
        return config

    def model_class(self) -> type:
        """The transformers model class; with expected-unused checkpoint keys declared, so that
        loading e.g. a pre-training checkpoint does not print a report about its heads."""
        import transformers

        base = getattr(transformers, self.model_class_name)
        if not self.ignore_unexpected:
            return base
        key = (self.model_class_name, self.ignore_unexpected)
        if key not in _MODEL_CLASSES:  # one subclass per pattern set, created on first use
            _MODEL_CLASSES[key] = type(f"{self.model_class_name}Backbone", (base,), {
                "_keys_to_ignore_on_load_unexpected": list(self.ignore_unexpected),
                "__module__": type(self).__module__,
            })
        return _MODEL_CLASSES[key]

    def check_local_config(self, weights_path: str | None, config: Any) -> None:
        """Refuse a ``--weights-dir`` checkpoint whose config.json describes another model."""
        folder = local_checkpoint(self.spec.hf_id, weights_path)
        if folder is None or not (folder / "config.json").is_file():
            return
        raw = json.loads((folder / "config.json").read_text())
        problems = []
        model_type = raw.get("model_type")
        if model_type is not None and model_type not in self.model_types:
            problems.append(f"model_type {model_type!r} is not one of {list(self.model_types)}")
        for key in ARCH_KEYS:
            ours = getattr(config, key, None)
            if key in raw and ours is not None and _canon(raw[key]) != _canon(ours):
                problems.append(f"{key} is {raw[key]!r}, {self.name} needs {_canon(ours)!r}")
        if problems:
            raise MissingWeightsError(
                f"{folder} does not hold weights for {self.name} ({self.spec.hf_id}): "
                + "; ".join(problems) + ". Point --weights-dir at a folder with the right "
                "checkpoint, or register an encoder built with a matching config= override."
            )

    # -- Encoder interface ----------------------------------------------------------------

    def load(self, device: torch.device, weights: str = "pretrained",
             weights_path: str | None = None) -> None:
        """Pretrained (``--weights-dir`` folder or hub cache) or seeded random weights."""
        import torch

        device = torch.device(device)
        self.model = None  # a reload must not hold two copies of the weights
        config = self.model_config()
        if weights == "pretrained":
            self.check_local_config(weights_path, config)
        model = load_model(self.model_class(), self.spec.hf_id, self.hub.to_load, config,
                           weights, weights_path, **attention_kwargs(device))
        # fp32 master weights whatever the checkpoint stores (transformers 5 loads dtype="auto"):
        # the core runs fp32 on CPU and bf16 autocast on CUDA, and caches under that name.
        self.model = model.to(device=device, dtype=torch.float32).eval()
        from embench_plugins import (
            fast_conv,
            folded_norm,
            fused_layers,
            fused_routes,
            gemm_features,
        )

        fast_conv.install(self.model)  # cuDNN's grouped positional conv is slow
        folded_norm.install(self.model)  # first conv + GroupNorm as one matmul
        gemm_features.install(self.model)  # auto: timed on CUDA, the module elsewhere
        fused_routes.install_ffn(self.model)  # auto: timed on CUDA, the module elsewhere
        fused_layers.install_layers(self.model)  # auto: timed on CUDA, the module elsewhere
        self.device, self.weights = device, weights

    def weights_revision(self, weights: str, weights_path: str | None) -> str | None:
        """The hub commit of the pretrained weights (:class:`HubRevision`)."""
        return self.hub.resolve(weights, weights_path)

    def route_notes(self) -> list[str]:
        """Which inference route each ``auto`` part of the model chose, and the times behind
        it (:mod:`embench_plugins.route_choice`); extraction logs these."""
        from embench_plugins import route_choice

        return route_choice.notes_of(self.model)

    def cast_weights(self, dtype: torch.dtype) -> None:
        """bf16 weights for frozen extraction (``--precision bf16``, CUDA's default)."""
        if self.model is None:
            raise RuntimeError(f"{self.name}: call load() before cast_weights()")
        self.model.to(dtype)

    def unload(self) -> None:
        on_cuda = self.device is not None and self.device.type == "cuda"
        self.model = None
        super().unload()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        """``[B, T]`` audio at ``info.sample_rate`` -> one ``[B, frames, dim]`` hidden state per
        layer (CNN output, then each transformer layer), in the model's compute dtype.

        The states are returned as the model made them, not stacked or cast: the pooler reads
        bf16 states directly and sums them in fp32 (``windowing.frame_sums``), so an fp32 copy
        of every layer would only move bytes (7% of MERT-95M's extraction). Callers that want
        fp32 call ``.float()``. Runs under whatever autocast / grad mode the caller set (bf16
        inference in the core, train mode with gradients in a fine-tuning protocol).
        """
        import torch

        if self.model is None:
            raise RuntimeError(f"{self.name}: call load() before forward()")
        if waveforms.ndim != 2:
            raise ValueError(f"{self.name}: expected [batch, samples], got "
                             f"{tuple(waveforms.shape)}")
        if waveforms.shape[-1] < self.info.min_samples:
            raise ValueError(f"{self.name}: windows need at least {self.info.min_samples} "
                             f"samples, got {waveforms.shape[-1]}")
        x = waveforms.to(self.device, torch.float32)
        if self.spec.do_normalize:
            x = zero_mean_unit_var(x)
        out = self.model(x.to(self.model.dtype), output_hidden_states=True)
        states = list(out.hidden_states)
        if getattr(self.model.config, "tie_last_hidden_states", False):
            # Post-final-LayerNorm last state (stable-layer-norm models), as transformers 4 and
            # the model cards define it; explicit so older transformers 5 releases agree.
            states[-1] = out.last_hidden_state
        return states

    def trainable_module(self) -> torch.nn.Module:
        """The transformers model itself; call :meth:`set_gradient_checkpointing` to trade
        compute for activation memory when fine-tuning."""
        if self.model is None:
            raise RuntimeError(f"{self.name}: call load() before trainable_module()")
        return self.model

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each transformer layer in the backward pass (active in train mode only).

        Non-reentrant checkpointing, so the frozen-input case (waveforms without grad) works.
        """
        model = self.trainable_module()
        if enabled:
            kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # newer 5.x; the old name warns
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        elif hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_disable()
