"""Audio decoding: any of WAV/FLAC/OGG/MP3 -> mono float32 at the encoder's sample rate.

soundfile decodes, soxr resamples (high quality, deterministic), channels are averaged. Every
way a file can be unusable becomes one :class:`AudioDecodeError` carrying the path and reason,
which the runner records as a skipped clip.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from embench.errors import AudioDecodeError

# libsndfile's frame count for a file whose header does not give its length (a FLAC written to a
# pipe has total samples 0): SF_COUNT_MAX. It reads such a file in part, never to its end.
UNKNOWN_LENGTH = 2**62
UNKNOWN_LENGTH_HELP = (
    "its header does not give its length (e.g. a FLAC written to a pipe: total samples 0), and "
    "libsndfile cannot read such a file to its end; re-encode it once, e.g. `ffmpeg -i FILE "
    "-c:a flac FIXED.flac` (or to WAV), and point the task at the fixed file")


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
            try:
                data = fh.read(frames=frames, dtype="float32", always_2d=True)
            except Exception:
                if fh.frames >= UNKNOWN_LENGTH:
                    raise AudioDecodeError(label, UNKNOWN_LENGTH_HELP) from None
                raise
            _check_complete(fh, start, stop, len(data), label)
    except AudioDecodeError:
        raise
    except Exception as exc:  # soundfile raises several types; all mean "undecodable"
        raise AudioDecodeError(label, f"{type(exc).__name__}: {exc}".strip()) from None
    return prepare_waveform(data, native_sr, sample_rate, label)


# Containers whose frame count comes from a header (data size / frame size), so a file that holds
# fewer frames than it declares was cut short. Not OGG (the count is the last page's granule
# position, i.e. what the file holds) or MPEG (libsndfile may estimate it); a count libsndfile
# does not know (a FLAC streamed without its total) is SF_COUNT_MAX and never checked.
_HEADER_COUNTED = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "FLAC"})
_UNKNOWN_FRAMES = 2**62
# libsndfile clamps a WAV/AIFF whose data chunk runs past the end of the file to what is there
# and says so only in its log: "data : 128000 (should be 60136)"; AIFF logs "Frames : N".
_CLAMPED = re.compile(r"^\s*(?:data|SSND)\s*:\s*\d+\s*\(should be \d+\)", re.MULTILINE)
_DATA_BYTES = re.compile(r"^\s*data\s*:\s*(\d+)\s*\(should be", re.MULTILINE)
_AIFF_FRAMES = re.compile(r"^\s*Frames\s*:\s*(\d+)", re.MULTILINE)
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
                 "DOUBLE": 8, "ULAW": 1, "ALAW": 1}


def _declared_frames(fh) -> int | None:
    """The frame count the header declares when libsndfile shortened it to what the file holds
    (``fh.frames``); None when it did not, or the log does not say."""
    log = fh.extra_info
    if not _CLAMPED.search(log):
        return None
    if fh.format == "AIFF":
        found = _AIFF_FRAMES.search(log)
        return int(found.group(1)) if found else None
    found, width = _DATA_BYTES.search(log), _SAMPLE_BYTES.get(fh.subtype)
    if found is None or width is None or int(found.group(1)) in (0, 0xFFFFFFFF):
        return None  # 0 or 0xFFFFFFFF: a streamed WAV (ffmpeg to a pipe) that never knew its size
    return int(found.group(1)) // (width * fh.channels)


def _check_complete(fh, start: int, stop: int | None, got: int, label: str) -> None:
    """Raise when fewer frames of ``[start, stop)`` were read than the header declares: a
    truncated file would otherwise pass as a shorter clip. No second read: a segment that ends
    inside what the file holds needs only the count, and a read that ran to the file's end
    checks libsndfile's log (a string) for a count it had to shorten."""
    if fh.format not in _HEADER_COUNTED:
        return
    holds = fh.frames
    if not 0 < holds < _UNKNOWN_FRAMES:
        return
    end = holds if stop is None else min(stop, holds)
    if got < end - min(start, end):  # the count was kept, the read ended where the data did
        _truncated(label, holds, min(start, holds) + got)
    if (stop is not None and stop <= holds) or fh.format == "FLAC":
        return  # FLAC's count is its STREAMINFO total, never shortened
    declared = _declared_frames(fh)
    if declared is None or declared <= holds:
        return
    if start < (declared if stop is None else min(stop, declared)):  # wants frames past holds
        _truncated(label, declared, holds)


#: A file may hold this much less than its header declares and still be used: some writers
#: get the data size slightly wrong, and a clip short of its last 1% is still the clip.
TRUNCATION_TOLERANCE = 0.01


def _truncated(label: str, declared: int, holds: int) -> None:
    if holds >= declared * (1 - TRUNCATION_TOLERANCE):
        return
    raise AudioDecodeError(label, f"truncated: the header declares {declared} frames, the file "
                                  f"holds {holds} (re-download or re-export it)")


def prepare_waveform(data: np.ndarray, native_sr: int, sample_rate: int, label: str) -> np.ndarray:
    """Mono-mix ``[samples, channels]`` (or ``[samples]``) audio and resample it.

    A mono file's one column is taken as it is and a stereo file's two are added and halved
    (``mean(axis=1)`` gives the same numbers but walks each row through a reduction), and the
    finiteness check sums first: a finite sum of float32
    audio means every sample is finite, and only a non-finite one (a NaN, an inf, or finite
    samples near 3e38 that overflow) pays the full check. ``benchmarks/test_decode_speed.py``
    times both against the former way."""
    if data.ndim == 2:
        channels = data.shape[1]
        if channels == 1:
            data = data[:, 0]
        elif channels == 2:  # what mean(axis=1) computes, without its per-row reduction
            data = (data[:, 0] + data[:, 1]) / np.float32(2)
        else:
            data = data.mean(axis=1)
    if data.size == 0:
        raise AudioDecodeError(label, "no audio samples (empty or cropped past the end)")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow only means "check all"
        total = data.sum()
    if not np.isfinite(total) and not np.isfinite(data).all():
        raise AudioDecodeError(label, "audio contains NaN or infinite samples")
    if native_sr != sample_rate:
        import soxr

        data = soxr.resample(data, native_sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(data, dtype=np.float32)
