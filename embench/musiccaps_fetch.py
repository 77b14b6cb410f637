"""``embench data musiccaps``: say how to get MusicCaps audio, and fetch it from YouTube.

Why a fetcher at all: MusicCaps publishes only metadata, so every user must rebuild the audio
from YouTube. Doing it one way (same cut, same names) keeps copies comparable. What it does per
missing ytid: download the audio with yt-dlp into a temp folder, cut ``[start_s, end_s)``, and
write ``<data dir>/musiccaps/audio/<ytid>.flac`` atomically (a hidden temp file, then
``os.replace``), so an interrupted run never leaves a half clip the loader would take as real.
Resumable: ytids with audio already present (in any name the loader accepts) are skipped.
Videos that fail (deleted, private, region-blocked) are recorded in ``failed.json`` next to the
audio and skipped by later runs unless ``retry_failed``.

The cutting and bookkeeping are plain functions taking a ``downloader`` callable, so they are
tested offline with a fake one; only :func:`yt_dlp_downloader` touches the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from embench.errors import EmbenchError

Downloader = Callable[[str, Path], Path]
"""``(ytid, folder) -> path of the downloaded audio`` (any container); raises on failure."""
FAILED_NAME = "failed.json"


@dataclass
class FetchReport:
    """What one fetch run did, by ytid."""

    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped_failed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def youtube_url(ytid: str) -> str:
    return f"https://www.youtube.com/watch?v={ytid}"


def excerpt_path(audio_dir: Path, ytid: str) -> Path:
    """The one name the fetcher writes (the loader's canonical convention)."""
    return Path(audio_dir) / f"{ytid}.flac"


def cut_excerpt(src: Path, dst: Path, start_s: float, end_s: float) -> None:
    """Write ``[start_s, end_s)`` of ``src`` to ``dst`` as FLAC at the source's sample rate and
    channels, atomically. soundfile reads WAV/FLAC/OGG/MP3 directly; other containers (YouTube's
    m4a/webm) go through ffmpeg."""
    import soundfile as sf

    dst = Path(dst)
    tmp = dst.with_name(f".{dst.stem}.partial.flac")
    try:
        try:
            with sf.SoundFile(str(src)) as fh:
                sr = fh.samplerate
                start = min(int(round(start_s * sr)), fh.frames)
                fh.seek(start)
                data = fh.read(frames=max(0, int(round(end_s * sr)) - start), always_2d=True)
        except sf.LibsndfileError:
            _ffmpeg_cut(src, tmp, start_s, end_s)
        else:
            if len(data) == 0:
                raise ValueError(f"{src} has no audio in [{start_s}, {end_s}) s")
            sf.write(str(tmp), data, sr, format="FLAC")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _ffmpeg_cut(src: Path, dst: Path, start_s: float, end_s: float) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise EmbenchError(f"Cannot cut {src}: ffmpeg is not on PATH (install it, e.g. "
                           f"`apt install ffmpeg` or `conda install ffmpeg`).")
    subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-ss", str(start_s),
                    "-to", str(end_s), "-i", str(src), "-vn", "-f", "flac", str(dst)],
                   check=True, capture_output=True)


def load_failed(audio_dir: Path) -> dict[str, dict]:
    path = Path(audio_dir) / FAILED_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_failed(audio_dir: Path, failed: dict[str, dict]) -> None:
    path = Path(audio_dir) / FAILED_NAME
    tmp = path.with_name(f".{FAILED_NAME}.tmp")
    tmp.write_text(json.dumps(failed, indent=1, sort_keys=True))
    os.replace(tmp, path)


def fetch(rows: list, present: set[str], audio_dir: Path, downloader: Downloader,
          limit: int | None = None, retry_failed: bool = False,
          log: Callable[[str], None] = print) -> FetchReport:
    """Download and cut each row (``ytid``, ``start_s``, ``end_s``) not in ``present``; at most
    ``limit`` download attempts. Failures are saved after each one, so a killed run keeps them."""
    audio_dir = Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    failed = load_failed(audio_dir)
    report = FetchReport()
    attempts = 0
    for row in rows:
        if row.ytid in present or excerpt_path(audio_dir, row.ytid).is_file():
            report.present.append(row.ytid)
            continue
        if row.ytid in failed and not retry_failed:
            report.skipped_failed.append(row.ytid)
            continue
        if limit is not None and attempts >= limit:
            break
        attempts += 1
        with tempfile.TemporaryDirectory(prefix="embench-musiccaps-") as tmp:
            try:
                src = downloader(row.ytid, Path(tmp))
                cut_excerpt(src, excerpt_path(audio_dir, row.ytid), row.start_s, row.end_s)
            except EmbenchError:
                raise  # a set-up problem (no ffmpeg): every video would fail the same way
            except Exception as exc:  # yt-dlp raises DownloadError and friends for dead videos
                reason = f"{type(exc).__name__}: {exc}".strip()
                failed[row.ytid] = {"reason": reason[:500],
                                    "when": datetime.now(timezone.utc).isoformat()}
                _save_failed(audio_dir, failed)
                report.failed[row.ytid] = reason
                log(f"{row.ytid}: failed ({reason[:120]})")
                continue
        failed.pop(row.ytid, None)
        if retry_failed:
            _save_failed(audio_dir, failed)
        report.downloaded.append(row.ytid)
        log(f"{row.ytid}: ok")
    return report


def yt_dlp_downloader(ytid: str, folder: Path) -> Path:
    """Download the best audio stream of one video with yt-dlp (the only network access)."""
    try:
        import yt_dlp
    except ImportError:
        raise EmbenchError("Downloading MusicCaps needs yt-dlp: pip install 'embench[download]' "
                           "(and ffmpeg on PATH).") from None
    options = {"format": "bestaudio/best", "outtmpl": str(Path(folder) / f"{ytid}.%(ext)s"),
               "quiet": True, "no_warnings": True, "noplaylist": True, "noprogress": True}
    with yt_dlp.YoutubeDL(options) as ydl:
        info = ydl.extract_info(youtube_url(ytid), download=True)
        return Path(ydl.prepare_filename(info))


def instructions(data_dir: Path, n_total: int, n_present: int, n_failed: int) -> str:
    """What ``embench data musiccaps`` prints without ``--download``."""
    audio_dir = Path(data_dir) / "musiccaps" / "audio"
    return (
        f"MusicCaps: {n_present} of {n_total} clips present, {n_total - n_present} missing "
        f"({n_failed} known unavailable, listed in {audio_dir / FAILED_NAME}).\n"
        f"Only MusicCaps' metadata is public; the audio must come from YouTube, and many of its "
        f"videos are gone, so expect a partial copy (embench reports every missing clip).\n"
        f"To download the missing clips:\n"
        f"  pip install 'embench[download]'   # yt-dlp; ffmpeg must also be on PATH\n"
        f"  embench data musiccaps --download --data-dir {data_dir}\n"
        f"Clips are written as {audio_dir}/<ytid>.flac (the 10 s excerpt [start_s, end_s)); "
        f"reruns skip present clips and known-unavailable videos (--retry-failed retries them); "
        f"--limit N stops after N download attempts."
    )


def run(data_dir: Path, download: bool, limit: int | None, retry_failed: bool,
        downloader: Downloader | None = None, log: Callable[[str], None] = print) -> str:
    """The command: report (and with ``download``, fetch); returns the final summary line(s)."""
    from embench_tasks.musiccaps_layouts import csv_path, find_audio, read_metadata

    data_dir = Path(data_dir).expanduser()
    audio_dir = data_dir / "musiccaps" / "audio"
    rows = read_metadata(csv_path(data_dir))
    present = set(find_audio(data_dir, rows))
    if not download:
        return instructions(data_dir, len(rows), len(present), len(load_failed(audio_dir)))
    if downloader is None:
        try:
            import yt_dlp  # noqa: F401
        except ImportError:
            raise EmbenchError("--download needs yt-dlp: pip install 'embench[download]' "
                               "(and ffmpeg on PATH).") from None
        if shutil.which("ffmpeg") is None:
            raise EmbenchError("--download needs ffmpeg on PATH to cut YouTube audio "
                               "(e.g. `apt install ffmpeg`).")
        downloader = yt_dlp_downloader
    report = fetch(rows, present, audio_dir, downloader, limit, retry_failed, log)
    now = len(set(find_audio(data_dir, rows)))
    return (f"Downloaded {len(report.downloaded)}, failed {len(report.failed)}, skipped "
            f"{len(report.skipped_failed)} known-unavailable; {now} of {len(rows)} clips now in "
            f"{audio_dir}.")
