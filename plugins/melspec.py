"""``melspec``: the weight-free log-mel baseline every learned encoder has to beat.

It is written only against embench's public API, exactly as a third-party plugin would be, so it
doubles as the reference example for plugin authors. Once the core mean-pools frames over time its
three layers become "log-mel statistics": mean log-mel (timbre), its second moment (spread and
dynamics) and mean absolute delta (rhythm and onset energy). A learned encoder that cannot beat
this on a task has not learned anything that task needs beyond the spectrum.

torch is imported lazily so that loading the plugin (e.g. for ``embench list``) stays cheap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from embench import Encoder, EncoderInfo, hookimpl

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
N_FFT = 1024
HOP = 320  # 16000 / 320 = 50 frames per second
N_MELS = 64
F_MIN, F_MAX = 0.0, 8000.0
LOG_EPS = 1e-6  # floor so that digital silence maps to a finite log(1e-6) instead of -inf


def hz_to_mel(hz: float) -> float:
    """HTK mel scale: linear-ish below ~1 kHz, logarithmic above."""
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(
    n_freqs: int = N_FFT // 2 + 1,
    n_mels: int = N_MELS,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Triangular HTK mel filters, unnormalised (peak 1), as ``[n_freqs, n_mels]`` float32.

    Equal to torchaudio's ``melscale_fbanks(..., norm=None, mel_scale="htk")``, reimplemented
    because embench does not depend on torchaudio. Built in float64 and cast once, so the
    filter edges do not depend on the device's float32 arithmetic.
    """
    import torch

    freqs = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)  # [n_mels + 2] filter edges in Hz
    widths = edges[1:] - edges[:-1]  # [n_mels + 1]
    slopes = edges.unsqueeze(0) - freqs.unsqueeze(1)  # [n_freqs, n_mels + 2]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return fb.to(device=device, dtype=torch.float32)


class MelSpec(Encoder):
    """Log-mel spectrogram features; there are no weights to load.

    ``weights="pretrained"`` and ``weights="random"`` mean the same thing (nothing is learned,
    nothing is random), and ``weights_path`` is ignored. The output is deterministic and each row
    of a batch is computed independently of the others.
    """

    info = EncoderInfo(
        name="melspec",
        sample_rate=SAMPLE_RATE,
        num_layers=3,
        dims=(N_MELS, 2 * N_MELS, N_MELS),
        frame_rate=SAMPLE_RATE / HOP,
        description=(
            "Weight-free log-mel baseline (64 HTK mel bins, 0-8 kHz, 50 Hz frames). Layers: "
            "0 log-mel, 1 [log-mel, log-mel^2], 2 |delta log-mel|; mean-pooled, these are "
            "log-mel statistics."
        ),
        window_s=None,
        min_samples=N_FFT,
        license="Apache-2.0",
        version="1",
        random_init=False,  # nothing to initialise: --weights random is this same encoder
        extra={
            "n_fft": str(N_FFT),
            "hop_length": str(HOP),
            "n_mels": str(N_MELS),
            "mel_scale": "htk",
            "layers": "0: log-mel; 1: [log-mel, log-mel^2]; 2: |delta log-mel|",
        },
    )

    def __init__(self) -> None:
        super().__init__()
        self._fbank: torch.Tensor | None = None
        self._window: torch.Tensor | None = None

    def load(
        self,
        device: torch.device,
        weights: Literal["pretrained", "random"] = "pretrained",
        weights_path: str | None = None,
    ) -> None:
        """Build the filterbank and STFT window on ``device`` once, rather than per batch."""
        import torch

        if weights not in ("pretrained", "random"):
            raise ValueError(f"melspec: weights must be 'pretrained' or 'random', not {weights!r}")
        self.device = torch.device(device)
        self.weights = weights
        self._fbank = mel_filterbank(device=self.device)
        self._window = torch.hann_window(N_FFT, periodic=True, device=self.device)

    def unload(self) -> None:
        super().unload()
        self._fbank = None
        self._window = None

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` audio -> ``[B, T // HOP + 1, N_MELS]`` natural-log mel power."""
        import torch

        if self._fbank is None or self._window is None:
            raise RuntimeError("melspec: call load() before forward()")
        if waveforms.ndim != 2:
            raise ValueError(f"melspec: expected [batch, samples], got {tuple(waveforms.shape)}")
        if waveforms.shape[-1] < N_FFT:
            raise ValueError(
                f"melspec: clips need at least {N_FFT} samples, got {waveforms.shape[-1]}"
            )
        x = waveforms.to(device=self._fbank.device, dtype=torch.float32)
        spec = torch.stft(
            x,
            n_fft=N_FFT,
            hop_length=HOP,
            win_length=N_FFT,
            window=self._window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # [B, n_freqs, frames]
        power = spec.real.square() + spec.imag.square()
        mel = power.transpose(1, 2) @ self._fbank  # [B, frames, N_MELS]
        return torch.log(mel + LOG_EPS)

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        """Return ``[log-mel, [log-mel, log-mel^2], |delta log-mel|]``, each ``[B, F, D]``.

        All layers share the 50 Hz frame grid. The delta of the first frame is zero (the frame is
        its own predecessor) so that layer 2 keeps the same frame count as the others.
        """
        import torch

        lm = self.log_mel(waveforms)
        moments = torch.cat([lm, lm.square()], dim=-1)
        delta = torch.diff(lm, dim=1, prepend=lm[:, :1]).abs()
        return [lm, moments, delta]


@hookimpl
def register_encoders(register) -> None:
    """Entry point ``melspec = "embench_plugins.melspec"`` makes the core call this."""
    register(MelSpec())
