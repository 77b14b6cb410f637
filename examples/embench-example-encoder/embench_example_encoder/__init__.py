"""``example-rms``: a weight-free encoder of frame descriptors and spectral band energies.

This package is the worked example of CONTRIBUTING.md: a complete third-party embench plugin,
written only against embench's public API (``from embench import Encoder, EncoderInfo,
hookimpl``) and registered through the ``embench`` entry-point group in its pyproject.toml.

What it computes, at 16 kHz with 2048-sample frames every 20 ms (50 frames per second):

* layer 0, "descriptors" (16 dims): eight classic per-frame descriptors - log RMS energy,
  zero-crossing rate, spectral centroid, bandwidth, 85 % rolloff, log flatness, flux and
  entropy - followed by their squares, so that the core's mean pooling over time yields both
  the mean and the second moment (spread) of each descriptor;
* layer 1, "bands" (20 dims): log energies of the power spectrum projected onto 20 filters.

Layer 1 is where ``weights`` matters. ``"pretrained"`` uses designed filters: 12 chroma filters
(one per pitch class, 55 Hz - 4 kHz) and 8 octave bands (31.25 Hz - 8 kHz). ``"random"`` keeps
the same architecture but draws the 20 filters from a fixed seed, so that pretrained-vs-random
measures what the design (rather than the shape of the features) is worth. Layer 0 has no
parameters and is identical for both. ``weights_path`` is ignored: nothing is ever downloaded.

torch is imported inside functions so that plugin discovery (``embench list``) stays cheap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from embench import Encoder, EncoderInfo, hookimpl

if TYPE_CHECKING:
    import torch

__all__ = ["ExampleRMS", "band_filters", "random_filters", "register_encoders"]

SAMPLE_RATE = 16_000
N_FFT = 2048  # 128 ms: 7.8 Hz bins, fine enough to tell semitones apart from ~110 Hz up
HOP = 320  # 16000 / 320 = 50 frames per second
N_FREQS = N_FFT // 2 + 1
ROLLOFF = 0.85
EPS = 1e-10  # keeps logs and ratios finite on digital silence
RANDOM_SEED = 0  # the "random" filters are a fixed draw, so random-weight results reproduce
DESCRIPTORS = (
    "log_rms", "zcr", "centroid_khz", "bandwidth_khz", "rolloff_khz", "log_flatness", "flux",
    "entropy",
)
CHROMA_RANGE_HZ = (55.0, 4000.0)
OCTAVE_EDGES_HZ = (31.25, 62.5, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)
N_BANDS = 12 + len(OCTAVE_EDGES_HZ) - 1


def band_filters() -> torch.Tensor:
    """The designed ("pretrained") projection: ``[N_FREQS, 20]`` float32, columns summing to 1.

    Columns 0-11 are chroma filters (C, C#, ..., B): a Gaussian of 0.5 semitones around each
    pitch class in every octave between 55 Hz and 4 kHz. Columns 12-19 are octave bands. Unit
    column sums make every band an average power, so bands of different widths are comparable.
    """
    import torch

    freqs = torch.linspace(0.0, SAMPLE_RATE / 2, N_FREQS, dtype=torch.float64)
    midi = 69.0 + 12.0 * torch.log2(freqs.clamp(min=1.0) / 440.0)
    pitch_class = torch.arange(12, dtype=torch.float64)
    distance = torch.remainder(midi[:, None] - pitch_class[None, :] + 6.0, 12.0) - 6.0
    chroma = torch.exp(-0.5 * (distance / 0.5) ** 2)
    lo, hi = CHROMA_RANGE_HZ
    chroma = chroma * ((freqs >= lo) & (freqs <= hi)).to(torch.float64)[:, None]
    edges = OCTAVE_EDGES_HZ
    octaves = torch.stack(
        [(freqs >= a) & ((freqs < b) if b < edges[-1] else (freqs <= b))
         for a, b in zip(edges[:-1], edges[1:], strict=True)],
        dim=1,
    ).to(torch.float64)
    filters = torch.cat([chroma, octaves], dim=1)
    return (filters / filters.sum(dim=0, keepdim=True)).to(torch.float32)


def random_filters(seed: int = RANDOM_SEED) -> torch.Tensor:
    """The "random" projection: same shape and normalisation as :func:`band_filters`, uniform
    random entries. Drawn on the CPU so that the filters are the same on every device."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    filters = torch.rand(N_FREQS, N_BANDS, generator=generator, dtype=torch.float64)
    return (filters / filters.sum(dim=0, keepdim=True)).to(torch.float32)


class ExampleRMS(Encoder):
    """Frame descriptors (layer 0) and log band energies (layer 1); see the module docstring.

    The output is deterministic and each row of a batch is computed independently of the
    others, so batching and caching cannot change a clip's embedding.
    """

    info = EncoderInfo(
        name="example-rms",
        sample_rate=SAMPLE_RATE,
        num_layers=2,
        dims=(2 * len(DESCRIPTORS), N_BANDS),
        frame_rate=SAMPLE_RATE / HOP,
        description=(
            "Example plugin: weight-free frame descriptors (RMS, ZCR, spectral centroid, "
            "bandwidth, rolloff, flatness, flux, entropy, with squares) and 20 log band "
            "energies (12 chroma + 8 octave bands; random filters with --weights random)."
        ),
        # Descriptors are local to a frame, so cutting long audio into 10 s windows changes
        # only the frames at window edges, and it bounds the memory of one batch.
        window_s=10.0,
        hop_s=10.0,
        min_samples=N_FFT,
        license="Apache-2.0",
        version="1",  # bump whenever the output changes: it is part of the cache key
        extra={"layers": "0: descriptors and their squares; 1: log band energies",
               "descriptors": ",".join(DESCRIPTORS)},
    )

    def __init__(self) -> None:
        super().__init__()
        self._filters: torch.Tensor | None = None
        self._window: torch.Tensor | None = None
        self._freqs_khz: torch.Tensor | None = None

    def load(
        self,
        device: torch.device,
        weights: Literal["pretrained", "random"] = "pretrained",
        weights_path: str | None = None,
    ) -> None:
        """Build the filters, window and frequency axis on ``device`` once, not per batch."""
        import torch

        if weights not in ("pretrained", "random"):
            raise ValueError(f"example-rms: weights must be 'pretrained' or 'random', "
                             f"not {weights!r}")
        self.device = torch.device(device)
        self.weights = weights
        filters = band_filters() if weights == "pretrained" else random_filters()
        self._filters = filters.to(self.device)
        self._window = torch.hann_window(N_FFT, periodic=True, device=self.device)
        self._freqs_khz = torch.linspace(0.0, SAMPLE_RATE / 2000, N_FREQS, device=self.device)

    def unload(self) -> None:
        super().unload()
        self._filters = self._window = self._freqs_khz = None

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        """``[B, T]`` audio -> ``[descriptors [B, F, 16], bands [B, F, 20]]``, F = T // 320 + 1.

        Frames are centred (reflect-padded by half a frame at both ends), like ``torch.stft``
        with ``center=True``, so frame ``i`` is centred on sample ``i * HOP``.
        """
        import torch
        import torch.nn.functional as F

        if self._filters is None or self._window is None or self._freqs_khz is None:
            raise RuntimeError("example-rms: call load() before forward()")
        if waveforms.ndim != 2 or waveforms.shape[-1] < N_FFT:
            raise ValueError(f"example-rms: expected [batch, >= {N_FFT} samples], "
                             f"got {tuple(waveforms.shape)}")
        x = waveforms.to(device=self._filters.device, dtype=torch.float32)
        padded = F.pad(x.unsqueeze(1), (N_FFT // 2, N_FFT // 2), mode="reflect").squeeze(1)
        frames = padded.unfold(-1, N_FFT, HOP)  # [B, F, N_FFT]
        mag = torch.fft.rfft(frames * self._window).abs()  # [B, F, N_FREQS]
        power = mag.square()
        khz = self._freqs_khz

        log_rms = 0.5 * torch.log(frames.square().mean(-1) + EPS)
        zcr = (torch.signbit(frames[..., 1:]) != torch.signbit(frames[..., :-1])).float().mean(-1)
        mag_sum = mag.sum(-1) + EPS
        centroid = (mag * khz).sum(-1) / mag_sum
        bandwidth = torch.sqrt(((khz - centroid.unsqueeze(-1)).square() * mag).sum(-1) / mag_sum)
        cumulative = power.cumsum(-1)
        below = (cumulative < ROLLOFF * cumulative[..., -1:]).sum(-1).clamp(max=N_FREQS - 1)
        rolloff = khz[below]
        log_flatness = torch.log(power + EPS).mean(-1) - torch.log(power.mean(-1) + EPS)
        log_mag = torch.log1p(mag)
        flux = torch.relu(torch.diff(log_mag, dim=1, prepend=log_mag[:, :1])).mean(-1)
        p = power / (power.sum(-1, keepdim=True) + EPS)
        entropy = -(p * torch.log(p + EPS)).sum(-1) / math.log(N_FREQS)

        d = torch.stack(
            [log_rms, zcr, centroid, bandwidth, rolloff, log_flatness, flux, entropy], dim=-1
        )
        descriptors = torch.cat([d, d.square()], dim=-1)
        bands = torch.log(power @ self._filters + EPS)
        return [descriptors, bands]


@hookimpl
def register_encoders(register) -> None:
    """The entry point ``example = "embench_example_encoder"`` makes embench call this."""
    register(ExampleRMS())
