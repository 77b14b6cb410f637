"""Audio decoding: any of WAV/FLAC/OGG/MP3 -> mono float32 at the encoder's sample rate.

soundfile decodes, soxr resamples (high quality, deterministic), channels are averaged. Every
way a file can be unusable becomes one :class:`AudioDecodeError` carrying the path and reason,
which the runner records as a skipped clip.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from embench.errors import AudioDecodeError


def load_audio(
    source: Path | str | bytes,
    sample_rate: int,
    start_s: float | None = None,
    end_s: float | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode ``source`` (a path or encoded bytes), crop to ``[start_s, end_s)``, mix to mono and
    resample to ``sample_rate``. Returns a contiguous float32 array of shape ``[samples]``."""
    import soundfile as sf

    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AudioDecodeError(label, "file does not exist")
        if path.stat().st_size == 0:
            raise AudioDecodeError(label, "file is empty (0 bytes)")
        handle: Path | io.BytesIO = path
    else:
        if len(source) == 0:
            raise AudioDecodeError(label, "audio bytes are empty")
        handle = io.BytesIO(source)
    try:
        with sf.SoundFile(handle) as fh:
            native_sr = fh.samplerate
            start = 0 if start_s is None else max(0, int(round(start_s * native_sr)))
            stop = None if end_s is None else int(round(end_s * native_sr))
            if start:
                fh.seek(min(start, fh.frames))
            frames = -1 if stop is None else max(0, stop - start)
            data = fh.read(frames=frames, dtype="float32", always_2d=True)
    except AudioDecodeError:
        raise
    except Exception as exc:  # soundfile raises several types; all mean "undecodable"
        raise AudioDecodeError(label, f"{type(exc).__name__}: {exc}".strip()) from None
    return prepare_waveform(data, native_sr, sample_rate, label)


def prepare_waveform(data: np.ndarray, native_sr: int, sample_rate: int, label: str) -> np.ndarray:
    """Mono-mix ``[samples, channels]`` (or ``[samples]``) audio and resample it."""
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.size == 0:
        raise AudioDecodeError(label, "no audio samples (empty or cropped past the end)")
    if not np.isfinite(data).all():
        raise AudioDecodeError(label, "audio contains NaN or infinite samples")
    if native_sr != sample_rate:
        import soxr

        data = soxr.resample(data, native_sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(data, dtype=np.float32)
