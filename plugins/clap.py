"""``clap-music`` and ``clap-htsat-unfused``: the HTSAT audio branch of LAION-CLAP.

Two checkpoints, one code path. ``laion/larger_clap_music`` (HTSAT-base, the music model) and
``laion/clap-htsat-unfused`` (HTSAT-tiny) both take 10 s of 48 kHz audio as a 64-bin log-mel
spectrogram and load into transformers' built-in ``ClapAudioModelWithProjection`` (never remote
code). The audio config is written out here rather than read from the hub, so ``embench list``
knows every layer's width without network, and a folder whose config disagrees is refused.

Preprocessing is the checkpoints' own ``ClapFeatureExtractor(truncation="rand_trunc",
frequency_min=50, frequency_max=14000, padding="repeatpad")``, recomputed in torch so it runs
batched on the model's device (tests check it against the extractor). It is deterministic: the
core cuts long audio into windows of exactly 10 s, and ``rand_trunc`` only crops inputs longer
than that (transformers ``ClapFeatureExtractor._get_input_mel``), which ``forward`` refuses.
Shorter clips are repeat-padded exactly as ``repeatpad`` does.

Layers (``forward`` returns one ``[B, frames, dim]`` tensor each; widths and rates differ):

* ``patch_embed``, ``stage1`` .. ``stageN``: the patch embeddings and each Swin stage's output
  before its patch merging, i.e. every resolution HTSAT computes. See :func:`grid_to_frames` for
  how the ``[B, C, freq x time]`` grid becomes a time sequence.
* ``pooled``: the mean over the last stage's LayerNorm-ed grid (transformers' ``pooler_output``),
  the input of the projection; one frame per window.
* ``projection``: CLAP's 512-d joint audio-text embedding (``audio_embeds``), one frame per
  window. Kept raw: the model does not L2-normalise it and neither does this plugin (CLAP
  similarity scores normalise it; a probe can, and a mean over windows should not).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from embench import EmbenchError, Encoder, EncoderInfo, hookimpl
from embench_plugins.hf_loading import HubRevision, load_model, local_checkpoint

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 48_000
WINDOW_S = 10.0
MAX_SAMPLES = 480_000  # ClapFeatureExtractor.nb_max_samples = max_length_s * sampling_rate
N_FFT = 1024
HOP = 480
N_MELS = 64
F_MIN, F_MAX = 50.0, 14_000.0
POWER_FLOOR = 1e-10  # the extractor's mel_floor and dB min_value: -100 dB
MIN_SAMPLES = N_FFT  # one STFT window; anything shorter is repeated into noise
# Hub commits could not be confirmed offline, so nothing is pinned: the cache key records None.
REVISION: str | None = None

# What the checkpoints' preprocessor_config.json should say; a local folder is checked against it.
EXTRACTOR_SETTINGS: dict[str, Any] = {
    "feature_size": N_MELS, "sampling_rate": SAMPLE_RATE, "hop_length": HOP,
    "max_length_s": int(WINDOW_S), "fft_window_size": N_FFT, "frequency_min": F_MIN,
    "frequency_max": F_MAX, "truncation": "rand_trunc", "padding": "repeatpad", "top_db": None,
}

# The ClapAudioConfig defaults, spelled out. Only patch_embeds_hidden_size, depths and
# hidden_size differ between the two checkpoints: transformers' conversion script
# (convert_clap_original_pytorch_to_hf.py) sets just those three from the LAION weights, and
# diffusers' MusicLDM/AudioLDM2 converters build HTSAT-base as unfused + {128, [2, 2, 12, 2], 1024}.
_COMMON: dict[str, Any] = {
    "num_mel_bins": N_MELS, "spec_size": 256, "window_size": 8, "patch_size": 4,
    "patch_stride": [4, 4], "num_attention_heads": [4, 8, 16, 32], "projection_dim": 512,
    "projection_hidden_act": "relu", "enable_fusion": False,
}
# Fields that define the architecture; a local checkpoint's config must agree on all of them.
ARCH_KEYS = ("patch_embeds_hidden_size", "depths", "hidden_size", *_COMMON)


@dataclass(frozen=True)
class Variant:
    model_id: str
    audio_config: dict[str, Any]
    description: str


VARIANTS: dict[str, Variant] = {
    "clap-music": Variant(
        "laion/larger_clap_music",
        {**_COMMON, "patch_embeds_hidden_size": 128, "depths": [2, 2, 12, 2],
         "hidden_size": 1024},
        "LAION-CLAP music checkpoint, HTSAT-base audio branch (68.6M parameters with the "
        "projection).",
    ),
    "clap-htsat-unfused": Variant(
        "laion/clap-htsat-unfused",
        {**_COMMON, "patch_embeds_hidden_size": 96, "depths": [2, 2, 6, 2], "hidden_size": 768},
        "LAION-CLAP general-audio checkpoint without feature fusion, HTSAT-tiny audio branch "
        "(28.2M parameters with the projection).",
    ),
}

CITATION = (
    "Wu, Chen, Zhang, Hui, Berg-Kirkpatrick, Dubnov. Large-scale Contrastive Language-Audio "
    "Pretraining with Feature Fusion and Keyword-to-Caption Augmentation. ICASSP 2023."
)


@dataclass(frozen=True)
class LayerSpec:
    name: str
    dim: int
    frames: int  # per full 10 s window


def _describe(layer: LayerSpec) -> str:
    rate = f"{layer.frames / WINDOW_S:g} Hz" if layer.frames > 1 else "one per window"
    return f"{layer.name} ({layer.dim}-d, {rate})"


def _as_dict(config: Any) -> dict[str, Any]:
    return dict(config) if isinstance(config, Mapping) else config.to_dict()


def _norm(value: Any) -> Any:
    """Lists and tuples compare equal (JSON gives lists, ClapAudioConfig defaults tuples)."""
    return tuple(value) if isinstance(value, list | tuple) else value


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def layer_specs(config: Any) -> list[LayerSpec]:
    """Every layer ``forward`` returns, from an audio config (dict or ``ClapAudioConfig``).

    Raises :class:`EmbenchError` for configs this plugin cannot feed or read correctly.
    """
    cfg = _as_dict(config)
    if cfg.get("enable_fusion"):
        raise EmbenchError("CLAP with enable_fusion=True is not supported: this plugin feeds the "
                           "unfused (rand_trunc) input. Use an unfused checkpoint.")
    if cfg["num_mel_bins"] != N_MELS:
        raise EmbenchError(f"CLAP config has num_mel_bins={cfg['num_mel_bins']}; the "
                           f"checkpoints' feature extractor makes {N_MELS}.")
    depths, patch_dim = list(cfg["depths"]), int(cfg["patch_embeds_hidden_size"])
    freq_ratio = cfg["spec_size"] // cfg["num_mel_bins"]
    rows, cols = (cfg["spec_size"] // s for s in _pair(cfg["patch_stride"]))
    if cfg["hidden_size"] != patch_dim * 2 ** (len(depths) - 1):
        raise EmbenchError(f"CLAP config: hidden_size {cfg['hidden_size']} must be "
                           f"patch_embeds_hidden_size * 2^(len(depths) - 1)")
    if freq_ratio < 1 or (rows >> (len(depths) - 1)) % freq_ratio:
        raise EmbenchError("CLAP config: every stage's grid must split into spec_size // "
                           "num_mel_bins time chunks (see grid_to_frames)")
    specs = [LayerSpec("patch_embed", patch_dim, freq_ratio * cols)]
    specs += [LayerSpec(f"stage{i + 1}", patch_dim * 2**i, freq_ratio * (cols >> i))
              for i in range(len(depths))]
    specs += [LayerSpec("pooled", int(cfg["hidden_size"]), 1),
              LayerSpec("projection", int(cfg["projection_dim"]), 1)]
    return specs


def grid_to_frames(hidden: torch.Tensor, freq_ratio: int) -> torch.Tensor:
    """``[B, C, H, W]`` HTSAT grid -> ``[B, freq_ratio * W, C]`` frames in time order.

    HTSAT folds the ``[1024 frames x 64 mels]`` spectrogram into a 256 x 256 image: time is cut
    into ``freq_ratio`` (= spec_size // num_mel_bins = 4) consecutive chunks of 2.5 s, which are
    stacked along the image height (``ClapAudioEncoder.reshape_mel2img``). So at every stage the
    rows are ``(chunk, frequency)`` chunk-major and the columns are time within a chunk; patch
    merging halves both without mixing chunks (the row count stays a multiple of freq_ratio).
    This averages the rows of each chunk over frequency, then lays the chunks end to end: the same
    unfolding transformers applies to ``last_hidden_state``, followed by a mean over frequency.
    """
    b, c, rows, cols = hidden.shape
    per_chunk = hidden.float().reshape(b, c, freq_ratio, rows // freq_ratio, cols).mean(3)
    return per_chunk.reshape(b, c, freq_ratio * cols).transpose(1, 2)


class Clap(Encoder):
    """One CLAP checkpoint's audio branch. ``config`` overrides the architecture (tests register
    tiny models this way); ``info`` is built from whichever config is in force."""

    def __init__(self, variant: str = "clap-music", config: Any | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown CLAP variant {variant!r}; known: {', '.join(VARIANTS)}")
        spec = VARIANTS[variant]
        self.model_id = spec.model_id
        if config is None or isinstance(config, Mapping):  # a dict overrides single fields
            config = {**spec.audio_config, **(config or {})}
        self.config_source = config
        arch = _as_dict(config)
        self.arch = {k: _norm(arch[k]) for k in ARCH_KEYS}
        self.layers = layer_specs(arch)
        self.freq_ratio = arch["spec_size"] // arch["num_mel_bins"]
        custom = self.arch != {k: _norm(v) for k, v in spec.audio_config.items()}
        # A custom architecture must never share cache entries with the real one.
        version = "1" if not custom else "1-custom-" + _digest(self.arch)
        self.info = EncoderInfo(
            name=variant,
            sample_rate=SAMPLE_RATE,
            num_layers=len(self.layers),
            dims=tuple(layer.dim for layer in self.layers),
            frame_rate=max(layer.frames for layer in self.layers) / WINDOW_S,
            description=f"{spec.description} 10 s windows at 48 kHz; layers: "
            f"{', '.join(_describe(layer) for layer in self.layers)}. projection = the raw "
            "(not L2-normalised) CLAP audio-text embedding.",
            hf_id=spec.model_id,
            revision=REVISION,
            window_s=WINDOW_S,
            hop_s=None,
            min_samples=MIN_SAMPLES,
            license="Apache-2.0 (per the hub model card; not re-checked offline)",
            citation=CITATION,
            homepage=f"https://huggingface.co/{spec.model_id}",
            version=version,
            extra={
                "layers": ", ".join(f"{i}: {layer.name}" for i, layer in enumerate(self.layers)),
                "frames_per_window": ",".join(str(layer.frames) for layer in self.layers),
                "time_sequence": "stage grids [B, C, (chunk, freq), time] averaged over freq, "
                                 "chunks laid end to end (see grid_to_frames)",
                "projection": "audio_embeds, not L2-normalised",
                "preprocessing": "ClapFeatureExtractor rand_trunc, 50-14000 Hz slaney mel, "
                                 "repeatpad; no random crop (inputs <= 10 s)",
                "short_inputs": "frames kept only for the first copy of a repeat-padded clip",
                "audio_config": json.dumps(self.arch, sort_keys=True),
            },
        )
        self.hub = HubRevision(spec.model_id, REVISION)
        self.model: Any = None
        self._fbank: torch.Tensor | None = None
        self._window: torch.Tensor | None = None

    def _config(self) -> Any:
        from transformers import ClapAudioConfig

        if isinstance(self.config_source, Mapping):
            return ClapAudioConfig(**self.config_source)
        return copy.deepcopy(self.config_source)  # from_pretrained may write to it

    def _folder_config(self, folder: Path) -> Any:
        """The folder's own config (it knows its checkpoint best), if it agrees with ours."""
        from transformers import ClapAudioConfig

        try:
            config = ClapAudioConfig.from_pretrained(str(folder))
        except (OSError, ValueError, TypeError) as exc:
            raise EmbenchError(f"{folder}/config.json is not a CLAP config: {exc}") from exc
        theirs = {k: _norm(getattr(config, k)) for k in ARCH_KEYS}
        diff = {k: (theirs[k], self.arch[k]) for k in ARCH_KEYS if theirs[k] != self.arch[k]}
        if diff:
            detail = "; ".join(f"{k}: folder {a!r}, encoder {b!r}" for k, (a, b) in diff.items())
            raise EmbenchError(
                f"The checkpoint in {folder} is not the architecture of encoder "
                f"{self.name!r} ({self.model_id}): {detail}. Point --weights-dir at a copy of "
                f"{self.model_id}, or register Clap({self.name!r}, config=...) for this one."
            )
        return config

    def weights_revision(self, weights: str, weights_path: str | None) -> str | None:
        """The hub commit of the pretrained weights (:class:`HubRevision`)."""
        return self.hub.resolve(weights, weights_path)

    def load(
        self,
        device: torch.device,
        weights: Literal["pretrained", "random"] = "pretrained",
        weights_path: str | None = None,
    ) -> None:
        """Build the model (eager attention: CLAP audio has no SDPA) and the mel front-end."""
        import torch
        from transformers import ClapAudioModelWithProjection
        from transformers.audio_utils import mel_filter_bank

        config = self._config()
        local = local_checkpoint(self.model_id, weights_path) if weights == "pretrained" else None
        if local is not None:
            if (local / "config.json").is_file():
                config = self._folder_config(local)
            _check_preprocessor(local)
        model = load_model(ClapAudioModelWithProjection, self.model_id, self.hub.to_load, config,
                           weights, weights_path, attn_implementation="eager")
        self.device = torch.device(device)
        self.weights = weights
        self.model = model.to(self.device).eval()
        # float64 front-end like the extractor's: a float32 STFT is off by ~0.04 dB in bands
        # ~120 dB under a pure tone (measured against ClapFeatureExtractor). MPS has no float64.
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        fbank = mel_filter_bank(  # the extractor's own `mel_filters_slaney` (rand_trunc path)
            num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=F_MIN,
            max_frequency=F_MAX, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney",
        )
        self._fbank = torch.as_tensor(fbank, dtype=dtype, device=self.device)
        self._window = torch.hann_window(N_FFT, periodic=True, dtype=dtype, device=self.device)

    def unload(self) -> None:
        super().unload()
        self.model = self._fbank = self._window = None

    def trainable_module(self) -> torch.nn.Module:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call load() before trainable_module()")
        return self.model

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` audio (T <= 480000) -> ``[B, 1001, 64]`` float32 dB log-mel, equal to
        ``ClapFeatureExtractor(...)(audio).input_features[:, 0]`` with the checkpoint settings.

        Autocast is off here whatever the caller runs under: the log of small powers in bf16
        would lose the quiet bands.
        """
        import torch
        import torch.nn.functional as F

        if self._fbank is None or self._window is None:
            raise RuntimeError(f"{self.name}: call load() before forward()")
        if waveforms.ndim != 2:
            raise ValueError(f"{self.name}: expected [batch, samples], got "
                             f"{tuple(waveforms.shape)}")
        n = waveforms.shape[-1]
        if n > MAX_SAMPLES:
            raise EmbenchError(
                f"{self.name} takes at most {WINDOW_S:g} s ({MAX_SAMPLES} samples) per window, "
                f"got {n}; CLAP would crop longer input at random. Use --window-s {WINDOW_S:g} "
                f"or less."
            )
        if n < 1:
            raise ValueError(f"{self.name}: empty input")
        with torch.autocast(device_type=self._fbank.device.type, enabled=False):
            x = waveforms.to(device=self._fbank.device, dtype=self._fbank.dtype)
            if n < MAX_SAMPLES:  # repeatpad: whole repeats, then zeros up to 10 s
                x = F.pad(x.repeat(1, MAX_SAMPLES // n), (0, MAX_SAMPLES % n))
            spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT,
                              window=self._window, center=True, pad_mode="reflect",
                              return_complex=True)  # [B, 513, 1001]
            power = spec.real.square() + spec.imag.square()
            mel = (power.transpose(1, 2) @ self._fbank).clamp_min(POWER_FLOOR)
            return (10.0 * torch.log10(mel)).float()

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        """Return ``[patch_embed, stage1..N, pooled, projection]`` as float32 ``[B, F_l, D_l]``.

        For inputs shorter than 10 s the model sees the repeat-padded 10 s, but the time layers
        keep only the frames covering the first copy (``ceil(frames * n / 480000)``), so the
        core spreads them over the clip's real duration. ``pooled`` and ``projection`` stay the
        checkpoint's embedding of the padded input, one frame each.
        """
        if self.model is None:
            raise RuntimeError(f"{self.name}: call load() before forward()")
        n = waveforms.shape[-1]
        features = self.log_mel(waveforms).unsqueeze(1)  # [B, 1, 1001, 64]
        out = self.model.audio_model(input_features=features, output_hidden_states=True,
                                     output_hidden_states_before_downsampling=True,
                                     return_dict=True)
        pooled = out.pooler_output
        embeds = self.model.audio_projection(pooled)
        layers = []
        for grid in out.hidden_states:
            frames = grid_to_frames(grid, self.freq_ratio)
            keep = max(1, -(-frames.shape[1] * n // MAX_SAMPLES))
            layers.append(frames[:, :keep])
        return [*layers, pooled.float().unsqueeze(1), embeds.float().unsqueeze(1)]


def _digest(arch: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:8]


def _check_preprocessor(folder: Path) -> None:
    """Warn when a local checkpoint's preprocessor_config.json disagrees with the settings this
    plugin applies (e.g. a fused checkpoint): the model would then see features it was not
    trained on. A warning, not an error: the hub files could not be re-checked offline."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    diff = [f"{k}={saved[k]!r} (applied: {v!r})" for k, v in EXTRACTOR_SETTINGS.items()
            if k in saved and saved[k] != v]
    if diff:
        warnings.warn(f"{path} differs from the CLAP preprocessing embench applies: "
                      f"{', '.join(diff)}", stacklevel=3)


@hookimpl
def register_encoders(register) -> None:
    """Entry point ``clap = "embench_plugins.clap"`` makes the core call this."""
    for variant in VARIANTS:
        register(Clap(variant))


__all__ = ["VARIANTS", "Clap", "grid_to_frames", "layer_specs"]
