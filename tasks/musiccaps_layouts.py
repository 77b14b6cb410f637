"""MusicCaps on disk: the metadata CSV, the audio files, and the official split.

Metadata: ``<data dir>/musiccaps/musiccaps-public.csv`` if present (e.g. a newer copy), else the
5,521-row CSV shipped with embench (only metadata is public; the audio lives on YouTube).

Audio: files in ``<data dir>/musiccaps/audio/`` (checked first) or ``<data dir>/musiccaps/``,
with suffix .flac, .wav, .ogg or .mp3. Naming convention (what ``embench data musiccaps
--download`` writes): ``<ytid>.flac``, holding the 10 s excerpt ``[start_s, end_s)``. Tolerated:

- ``<ytid>_<start>_<end>.<ext>`` (or with ``-`` separators): the name says it is the excerpt;
- ``<ytid>.<ext>`` longer than the excerpt plus :data:`EXCERPT_TOLERANCE_S`: taken as the full
  YouTube track, so the clip is cropped with the CSV's ``start_s``/``end_s`` (decided from
  ``soundfile.info``'s duration because the name cannot say; a file soundfile cannot read is
  taken as an excerpt and its decode error is reported by the core during extraction).

Hidden files (``.<name>``, e.g. the downloader's partial files) are ignored. When one ytid has
several files, the first in :data:`AUDIO_SUFFIXES` order wins, excerpt-named files before plain.

Hugging Face copy: ``*.parquet`` under ``<data dir>/musiccaps/`` with an audio column of
``{bytes, path}`` structs, read with ``datasets`` and ``Audio(decode=False)``; rows are matched to
the CSV by a ``ytid`` column (else the file name in the struct's path) and taken as excerpts; a
``caption`` column overrides the CSV's caption.
"""

from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DATA_SUBDIR = "musiccaps"
CSV_NAME = "musiccaps-public.csv"
AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3")
EXCERPT_TOLERANCE_S = 1.5  # excerpts cut by other tools run a little long (codec padding)
VALID_FRACTION = 0.1
_NAME = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})(?:[_-](?P<start>\d+(?:\.\d+)?)"
                   r"[_-](?P<end>\d+(?:\.\d+)?))?$")
_COLUMNS = ("ytid", "start_s", "end_s", "caption", "is_audioset_eval")


@dataclass(frozen=True)
class Row:
    """One line of the MusicCaps metadata CSV."""

    ytid: str
    start_s: float
    end_s: float
    audioset_positive_labels: tuple[str, ...]
    aspect_list: str
    caption: str
    author_id: str
    is_balanced_subset: bool
    is_audioset_eval: bool


@dataclass(frozen=True)
class FoundAudio:
    """Where one ytid's audio is, and the crop to apply (``None``: the file is the excerpt)."""

    source: Path | bytes
    start_s: float | None = None
    end_s: float | None = None
    caption: str | None = None


def _bool(value: str, where: str) -> bool:
    """The CSV writes Python booleans; anything else is a corrupt copy, not False."""
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"{where}: {value!r} is not True/False")


def csv_path(data_dir: Path) -> Path:
    """The user's CSV under the data dir if there is one, else the shipped copy."""
    local = Path(data_dir).expanduser() / DATA_SUBDIR / CSV_NAME
    if local.is_file():
        return local
    return Path(str(resources.files("embench_tasks") / "musiccaps_data" / CSV_NAME))


def read_metadata(path: Path) -> list[Row]:
    """Parse the CSV with the csv module: captions hold commas, quotes and newlines."""
    from embench import MissingDataError

    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        lacking = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
        if lacking:
            raise MissingDataError(f"{path} is not the MusicCaps CSV: no column(s) {lacking}")
        rows = []
        for n, r in enumerate(reader, start=2):
            where = f"{path}, line {n}"
            rows.append(Row(
                ytid=r["ytid"].strip(), start_s=float(r["start_s"]), end_s=float(r["end_s"]),
                audioset_positive_labels=tuple(x for x in r.get("audioset_positive_labels",
                                                                "").split(",") if x),
                aspect_list=r.get("aspect_list", ""), caption=r["caption"],
                author_id=r.get("author_id", ""),
                is_balanced_subset=_bool(r.get("is_balanced_subset") or "False", where),
                is_audioset_eval=_bool(r["is_audioset_eval"], where)))
    return rows


def audio_dirs(data_dir: Path) -> list[Path]:
    root = Path(data_dir).expanduser() / DATA_SUBDIR
    return [root / "audio", root]


def parse_name(path: Path) -> tuple[str, bool] | None:
    """``(ytid, name says excerpt)`` for an accepted audio file name, else ``None``."""
    if path.name.startswith(".") or path.suffix.lower() not in AUDIO_SUFFIXES:
        return None
    m = _NAME.match(path.stem)
    return (m["ytid"], m["start"] is not None) if m else None


def _duration(path: Path) -> float | None:
    import soundfile as sf

    try:
        return float(sf.info(str(path)).duration)
    except Exception:  # unreadable here: the core reports it when it decodes the clip
        return None


def find_audio(data_dir: Path, rows: list[Row]) -> dict[str, FoundAudio]:
    """Ytid -> audio for every CSV row with a file on disk (see the module doc for names)."""
    by_id = {r.ytid: r for r in rows}
    candidates: dict[str, list[tuple[int, Path, bool]]] = {}
    for rank_dir, folder in enumerate(audio_dirs(data_dir)):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            parsed = parse_name(path)
            if parsed is None or parsed[0] not in by_id or not path.is_file():
                continue
            ytid, named_excerpt = parsed
            rank = (rank_dir * 10 + AUDIO_SUFFIXES.index(path.suffix.lower()) * 2
                    + (not named_excerpt))
            candidates.setdefault(ytid, []).append((rank, path, named_excerpt))
    found: dict[str, FoundAudio] = {}
    for ytid, options in candidates.items():
        _, path, named_excerpt = min(options, key=lambda o: (o[0], str(o[1])))
        row = by_id[ytid]
        length = _duration(path) if not named_excerpt else None
        full = length is not None and length > row.end_s - row.start_s + EXCERPT_TOLERANCE_S
        found[ytid] = (FoundAudio(path, row.start_s, row.end_s) if full else FoundAudio(path))
    for ytid, audio in _parquet_audio(data_dir, by_id).items():
        found.setdefault(ytid, audio)
    return found


def _parquet_audio(data_dir: Path, by_id: dict[str, Row]) -> dict[str, FoundAudio]:
    """Excerpts from Hugging Face parquet files under ``<data dir>/musiccaps/``, if any."""
    root = Path(data_dir).expanduser() / DATA_SUBDIR
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else []
    if not files:
        return {}
    from datasets import Audio, load_dataset

    dataset = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    audio_col = next((c for c in ("audio", *dataset.column_names)
                      if isinstance(dataset.features.get(c), (Audio, dict))
                      and c in dataset.column_names), None)
    if audio_col is None:
        return {}
    dataset = dataset.cast_column(audio_col, Audio(decode=False))
    found: dict[str, FoundAudio] = {}
    for row in dataset:
        audio = row[audio_col] or {}
        ytid = row.get("ytid") or _stem(audio.get("path"))
        if ytid in by_id and audio.get("bytes"):
            caption = row.get("caption")
            found[ytid] = FoundAudio(bytes(audio["bytes"]), caption=caption or None)
    return found


def _stem(path: str | None) -> str | None:
    if not path:
        return None
    m = _NAME.match(re.split(r"[\\/]", path)[-1].rsplit(".", 1)[0])
    return m["ytid"] if m else None


def assign_splits(rows: list[Row], seed: int = 0,
                  valid_fraction: float = VALID_FRACTION) -> dict[str, str]:
    """Official split: test = ``is_audioset_eval``, train = the rest, minus a seeded
    ``valid_fraction`` of the train rows as valid. Carved from *all* CSV train rows, not just the
    downloaded ones, so a clip's split does not depend on which videos a copy could fetch."""
    train = sorted(r.ytid for r in rows if not r.is_audioset_eval)
    random.Random(seed).shuffle(train)
    valid = set(train[:round(len(train) * valid_fraction)])
    return {r.ytid: "test" if r.is_audioset_eval else ("valid" if r.ytid in valid else "train")
            for r in rows}
