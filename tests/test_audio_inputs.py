"""Bad audio inputs: a file cut short must be an error, not a shorter clip; files whose frame
count is exact, estimated or unknown must not be flagged."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from embench import AudioDecodeError, load_audio

SR = 16000
FRAMES = 64000  # 4 s


def _noise(channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (FRAMES, channels) if channels > 1 else (FRAMES,)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


def _write(path: Path, channels: int = 1, **kw) -> Path:
    sf.write(path, _noise(channels), SR, **kw)
    return path


def _truncate(path: Path, keep_bytes: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def _frames_held(path: Path) -> int:
    with sf.SoundFile(path) as fh:
        return fh.frames


def _truncated_wav(tmp_path: Path, channels: int = 1, subtype: str = "PCM_16") -> Path:
    path = _write(tmp_path / "cut.wav", channels, subtype=subtype)
    _truncate(path, 44 + 59956 * channels)  # 44-byte header + 29978 16-bit frames
    return path


def test_truncated_wav_is_an_error_naming_both_counts(tmp_path):
    path = _truncated_wav(tmp_path)
    assert _frames_held(path) == 29978
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, SR)
    assert info.value.path == str(path)
    assert info.value.reason.startswith(
        "truncated: the header declares 64000 frames, the file holds 29978")
    assert "re-download or re-export" in info.value.reason


def test_a_wav_short_of_less_than_one_percent_is_still_used(tmp_path):
    """Writers that get the data size slightly wrong must not cost a dataset its clips."""
    path = _write(tmp_path / "nearly.wav")
    _truncate(path, 44 + 2 * (FRAMES - 320))  # 20 ms (0.5%) short
    assert len(load_audio(path, SR)) == FRAMES - 320
    _truncate(path, 44 + 2 * (FRAMES - 1280))  # 80 ms (2%) short
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(path, SR)


def test_truncated_wav_bytes_and_resampled(tmp_path):
    data = _truncated_wav(tmp_path).read_bytes()
    with pytest.raises(AudioDecodeError, match="header declares 64000 frames, the file holds"):
        load_audio(data, 22050)


@pytest.mark.parametrize("channels,subtype", [(2, "PCM_16"), (1, "PCM_24"), (2, "FLOAT"),
                                              (1, "PCM_U8")])
def test_truncated_wav_other_layouts(tmp_path, channels, subtype):
    path = _write(tmp_path / "x.wav", channels, subtype=subtype)
    _truncate(path, path.stat().st_size // 3)
    held = _frames_held(path)
    assert held < FRAMES
    with pytest.raises(AudioDecodeError,
                       match=f"declares {FRAMES} frames, the file holds {held}"):
        load_audio(path, SR)


def test_truncated_aiff(tmp_path):
    path = _write(tmp_path / "x.aiff", 2, subtype="PCM_16")
    _truncate(path, path.stat().st_size // 2)
    with pytest.raises(AudioDecodeError, match=f"declares {FRAMES} frames, the file holds "
                                               f"{_frames_held(path)}"):
        load_audio(path, SR)


def test_segments_of_a_truncated_wav(tmp_path):
    """A segment inside what the file holds is complete; one reaching past it is not."""
    path = _truncated_wav(tmp_path)
    audio = load_audio(path, SR, start_s=0.5, end_s=1.5)
    np.testing.assert_allclose(audio, _noise()[8000:24000], atol=1e-4)
    for start, end in [(1.0, 3.0), (0.0, None), (3.0, None), (2.0, 4.0)]:
        with pytest.raises(AudioDecodeError, match="truncated: the header declares 64000"):
            load_audio(path, SR, start_s=start, end_s=end)


def test_complete_files_are_not_flagged(tmp_path):
    """An intact file read whole, in part, or with a window past its end (a clip shorter than
    its window is normal) decodes as before."""
    path = _write(tmp_path / "ok.wav", subtype="PCM_16")
    assert len(load_audio(path, SR)) == FRAMES
    assert len(load_audio(path, SR, start_s=1.0, end_s=2.0)) == SR
    assert len(load_audio(path, SR, start_s=3.0, end_s=10.0)) == SR
    with pytest.raises(AudioDecodeError, match="no audio samples"):
        load_audio(path, SR, start_s=5.0)


@pytest.mark.parametrize("fmt,ext", [("FLAC", "flac"), ("OGG", "ogg")])
@pytest.mark.parametrize("start,end,expected", [(None, None, FRAMES), (1.0, 3.0, 2 * SR),
                                                (0.077, 3.75, 58768), (3.5, 10.0, SR // 2)])
def test_exact_count_formats_read_whole_and_in_part(tmp_path, fmt, ext, start, end, expected):
    path = _write(tmp_path / f"a.{ext}", 2, format=fmt)
    assert len(load_audio(path, SR, start_s=start, end_s=end)) == expected


def test_truncated_ogg_is_not_flagged(tmp_path):
    """OGG's count is what its last page says, i.e. what the file holds: nothing to compare."""
    path = _write(tmp_path / "a.ogg", format="OGG")
    _truncate(path, path.stat().st_size // 2)
    assert len(load_audio(path, SR)) == _frames_held(path) < FRAMES


def test_streamed_wav_of_unknown_size_is_not_flagged(tmp_path):
    """ffmpeg writing to a pipe leaves 0xFFFFFFFF as the RIFF and data sizes: no declared count."""
    data = bytearray(_write(tmp_path / "s.wav", subtype="PCM_16").read_bytes())
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    at = data.index(b"data")
    data[at + 4:at + 8] = struct.pack("<I", 0xFFFFFFFF)
    assert len(load_audio(bytes(data), SR)) == FRAMES


def test_flac_of_unknown_length_is_not_flagged(tmp_path):
    """A FLAC streamed without its total (STREAMINFO total samples 0): libsndfile's count is
    SF_COUNT_MAX, which is no declaration to hold the read to."""
    data = bytearray(_write(tmp_path / "u.flac", subtype="PCM_16").read_bytes())
    data[21] &= 0xF0  # STREAMINFO's 36-bit total-samples field starts in the low nibble
    data[22:26] = b"\0\0\0\0"
    with sf.SoundFile(io.BytesIO(bytes(data))) as fh:
        assert fh.frames > 2**62
    assert len(load_audio(bytes(data), SR, start_s=0.5, end_s=1.5)) == SR
    # to its end libsndfile cannot read it: say so and how to fix it, not "array is too big"
    with pytest.raises(AudioDecodeError, match=r"header does not give its length .* `ffmpeg -i"):
        load_audio(bytes(data), SR)
    with pytest.raises(AudioDecodeError, match=r"header does not give its length"):
        load_audio(bytes(data), SR, start_s=3.5, end_s=4.5)  # past its last sample


def test_extraction_records_a_truncated_clip_as_skipped(tmp_path):
    from embench.decoding import decode_clip
    from embench.task import Clip

    clip = Clip(id="cut", source=_truncated_wav(tmp_path), target=0, split="test")
    clip_id, audio, reason = decode_clip(clip, SR, pin=False)
    assert (clip_id, audio) == ("cut", None)
    assert reason.startswith("truncated: the header declares 64000 frames, the file holds 29978")


def test_a_short_read_without_a_shortened_count_is_flagged():
    """Where libsndfile keeps the header's count and the read comes up short instead."""
    from types import SimpleNamespace

    from embench.audio import _check_complete

    fh = SimpleNamespace(format="WAV", subtype="PCM_16", channels=1, frames=FRAMES,
                         extra_info="data : 128000\n")
    _check_complete(fh, 0, SR, SR, "x.wav")  # complete segment
    with pytest.raises(AudioDecodeError, match="declares 64000 frames, the file holds 29978"):
        _check_complete(fh, 0, None, 29978, "x.wav")
    with pytest.raises(AudioDecodeError, match="declares 64000 frames, the file holds 29978"):
        _check_complete(fh, 16000, 48000, 13978, "x.wav")
    _check_complete(SimpleNamespace(**(vars(fh) | {"format": "MP3"})), 0, None, 10, "x.mp3")
