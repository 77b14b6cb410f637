"""Decoding, mono mixing, resampling, cropping, and one error type for every unusable file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from embench import AudioDecodeError, load_audio


def _tone(sr: int, seconds: float = 1.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    mono = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"),
                                     ("MP3", "mp3")])
def test_decodes_common_formats(tmp_path, fmt, ext):
    path = tmp_path / f"a.{ext}"
    sf.write(path, _tone(44100, channels=2), 44100, format=fmt)
    audio = load_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1200  # mp3 adds encoder delay/padding
    assert 0.1 < np.abs(audio).max() < 0.5


def test_stereo_is_mixed_to_mono(tmp_path):
    left = _tone(16000)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 16000, subtype="FLOAT")
    audio = load_audio(tmp_path / "s.wav", 16000)
    np.testing.assert_allclose(audio, left / 2, atol=1e-6)


def test_resampling_preserves_duration_and_pitch(tmp_path):
    sf.write(tmp_path / "t.wav", _tone(22050, 2.0), 22050, subtype="FLOAT")
    audio = load_audio(tmp_path / "t.wav", 24000)
    assert len(audio) == 48000
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 24000 / len(audio) - 440) < 1


def test_crop_by_start_and_end(tmp_path):
    sr = 8000
    ramp = np.linspace(-1, 1, sr * 4, dtype=np.float32)
    sf.write(tmp_path / "r.wav", ramp, sr, subtype="FLOAT")
    audio = load_audio(tmp_path / "r.wav", sr, start_s=1.0, end_s=2.5)
    np.testing.assert_array_equal(audio, ramp[sr:int(2.5 * sr)])


def test_bytes_source(tmp_path):
    buf = io.BytesIO()
    sf.write(buf, _tone(16000), 16000, format="FLAC")
    assert len(load_audio(buf.getvalue(), 16000)) == 16000


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"),
    (b"not a RIFF file" * 10, "Format not recognised"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", ""),
])
def test_corrupt_files_raise_one_error_type(tmp_path, content, reason):
    path = tmp_path / "jazz.00054.wav"
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path, 16000)
    assert err.value.path == str(path)
    assert reason in err.value.reason and err.value.reason
    assert str(path) in str(err.value)


def test_missing_file_and_crop_past_end(tmp_path):
    with pytest.raises(AudioDecodeError, match="does not exist"):
        load_audio(tmp_path / "nope.wav", 16000)
    sf.write(tmp_path / "short.wav", _tone(16000), 16000)
    with pytest.raises(AudioDecodeError, match="no audio samples"):
        load_audio(tmp_path / "short.wav", 16000, start_s=5.0, end_s=6.0)


def test_nan_audio_is_rejected(tmp_path):
    data = _tone(16000).astype(np.float32)
    data[10] = np.nan
    sf.write(tmp_path / "nan.wav", data, 16000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        load_audio(tmp_path / "nan.wav", 16000)



def test_any_non_finite_sample_is_rejected_and_huge_finite_ones_are_not(tmp_path):
    """The check sums first: an inf in either channel is still found, and finite samples whose
    float32 sum overflows (a FLOAT file near 3e38) still pass."""
    stereo = np.zeros((16000, 2), dtype=np.float32)
    stereo[5, 1] = -np.inf
    sf.write(tmp_path / "inf.wav", stereo, 16000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        load_audio(tmp_path / "inf.wav", 16000)
    huge = np.full(16000, 3e38, dtype=np.float32)
    sf.write(tmp_path / "huge.wav", huge, 16000, subtype="FLOAT")
    with np.errstate(over="ignore"):
        assert np.isinf(huge.sum())
    assert np.array_equal(load_audio(tmp_path / "huge.wav", 16000), huge)


def test_a_mono_file_is_its_own_column(tmp_path):
    wave = _tone(16000, seconds=1.0)
    sf.write(tmp_path / "m.wav", wave, 16000, subtype="FLOAT")
    out = load_audio(tmp_path / "m.wav", 16000)
    assert out.flags.c_contiguous and out.dtype == np.float32
    assert np.array_equal(out, wave.astype(np.float32))
