"""Finding a copy of GTZAN on disk, in any of the layouts it is distributed in.

Where: ``<data dir>/gtzan/`` (the data dir is ``--data-dir`` or ``$EMBENCH_DATA``); if that folder
does not exist, the data dir itself is taken as the GTZAN root. Layouts, tried in this order:

- original (marsyas): ``genres/<genre>/<genre>.000NN.wav`` (``.au`` works too);
- Kaggle: ``Data/genres_original/<genre>/...`` or ``genres_original/<genre>/...``;
- bare genre folders: ``<genre>/<genre>.000NN.wav`` directly under the root;
- Hugging Face parquet: ``*.parquet`` anywhere under the root, with an audio column of
  ``{"bytes", "path"}`` structs and a ``genre`` (string, or int) or ``label`` (int) column.
  Integer labels are named by the ``ClassLabel`` names in the files' Hugging Face features
  metadata when present, else by the 10 genres in alphabetical order (GTZAN's usual encoding).
  The clip id is the file name in the struct's path (``.../blues.00012.wav`` -> ``blues.00012``).

Nothing is decoded here: a corrupt file (``jazz.00054.wav`` in common copies) is found like any
other and skipped, with its reason recorded, by the core during extraction. Parquet files are read
with ``datasets`` with audio decoding switched off (``datasets`` 5 decodes only through
torchcodec); the encoded bytes become the clip's source and embench decodes them itself.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from embench import MissingDataError

from .gtzan_splits import GENRES

DATA_SUBDIR = "gtzan"
AUDIO_SUFFIXES = (".wav", ".au")  # preference order when both exist for one clip
LABEL_COLUMNS = ("genre", "label")
ID_COLUMNS = ("file", "filename")  # fallbacks when the audio struct has no path


@dataclass(frozen=True)
class FoundClip:
    """One clip of a copy: its genre (from the folder or the label column) and encoded audio."""

    id: str
    genre: str
    source: Path | bytes


@dataclass
class GtzanCopy:
    """What :func:`find_copy` found: where, in which layout, and the clips by id."""

    root: Path
    layout: str
    clips: dict[str, FoundClip]


def missing_message(data_dir: Path, looked_in: Path, detail: str = "") -> str:
    """The error text for a GTZAN that is not there: layouts, how to point embench at it, where
    to get it and what is known to be wrong with it."""
    nested = data_dir / DATA_SUBDIR
    return (
        f"GTZAN not found in {looked_in}.{detail}\n"
        f"Put a copy under {nested}/ (or make the data folder itself a GTZAN root, with no "
        f"gtzan/ folder in it) in one of these layouts:\n"
        f"  genres/<genre>/<genre>.000NN.wav          original marsyas copy (.au also works)\n"
        f"  Data/genres_original/<genre>/...           Kaggle copy (or genres_original/...)\n"
        f"  **/*.parquet                                Hugging Face copy: an audio column of "
        f"{{bytes, path}} and a 'genre' or 'label' column\n"
        f"The data folder is {data_dir}; choose another with --data-dir or the EMBENCH_DATA "
        f"environment variable.\n"
        f"Get GTZAN from: http://marsyas.info/downloads/datasets.html (original); Kaggle "
        f"'andradaolteanu/gtzan-dataset-music-genre-classification' (unzip so that "
        f"{nested}/Data/genres_original exists); or a Hugging Face parquet copy, e.g. "
        f"`huggingface-cli download confit/gtzan-parquet --repo-type dataset --local-dir "
        f"{nested}` (holds only the 930 fault-filtered clips, enough for the default task).\n"
        f"Known faults: jazz.00054.wav is corrupt in the common copies (embench skips it and "
        f"records why); GTZAN has repeated, distorted and mislabelled excerpts (Sturm 2013), "
        f"which the default fault-filtered split leaves out."
    )


def find_copy(data_dir: Path) -> GtzanCopy:
    """Find GTZAN under ``data_dir/gtzan`` (or ``data_dir`` if that does not exist); raise
    :class:`MissingDataError` with :func:`missing_message` if no layout holds any clip."""
    data_dir = Path(data_dir).expanduser()
    nested = data_dir / DATA_SUBDIR
    root = nested if nested.is_dir() else data_dir
    if not root.is_dir():
        raise MissingDataError(missing_message(data_dir, root))
    for layout, folder in (("original", root / "genres"),
                           ("kaggle", root / "Data" / "genres_original"),
                           ("kaggle", root / "genres_original"),
                           ("genre folders", root)):
        clips = _scan_genre_folders(folder) if folder.is_dir() else {}
        if clips:
            return GtzanCopy(root, layout, clips)
    files, unusable = _parquet_files(root)
    if files:
        stamps = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        return GtzanCopy(root, "parquet", _read_parquet_once(stamps))
    detail = ""
    if unusable:
        detail = (f"\nParquet files under {root} lack an audio {{bytes, path}} column or a "
                  f"genre/label column: " + "; ".join(unusable[:3]))
    raise MissingDataError(missing_message(data_dir, root, detail))


def _scan_genre_folders(folder: Path) -> dict[str, FoundClip]:
    """Audio files in ``folder/<genre>/``; the genre is the folder's. Hidden files (e.g. macOS
    ``._blues.00000.wav`` forks shipped in some archives) are not clips."""
    found: dict[str, FoundClip] = {}
    for genre in GENRES:
        genre_dir = folder / genre
        if not genre_dir.is_dir():
            continue
        for suffix in AUDIO_SUFFIXES:
            for path in sorted(genre_dir.glob(f"*{suffix}")):
                if path.name.startswith(".") or not path.is_file():
                    continue
                if path.stem in found:
                    if found[path.stem].genre != genre:
                        raise MissingDataError(
                            f"GTZAN clip {path.stem} is in two genre folders: "
                            f"{found[path.stem].source} and {path}; keep one.")
                    continue  # the same clip in a less preferred format
                found[path.stem] = FoundClip(path.stem, genre, path)
    return found


def _parquet_files(root: Path) -> tuple[list[Path], list[str]]:
    """Parquet files under ``root`` that look like GTZAN, and a note for each that does not."""
    import pyarrow.parquet as pq

    usable, unusable = [], []
    for path in sorted(root.rglob("*.parquet")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            schema = pq.read_schema(path)
        except Exception as exc:  # not a parquet file after all
            unusable.append(f"{path.name}: unreadable ({type(exc).__name__})")
            continue
        if _audio_column(schema) and any(c in schema.names for c in LABEL_COLUMNS):
            usable.append(path)
        else:
            unusable.append(f"{path.name}: columns {schema.names}")
    return usable, unusable


def _audio_column(schema) -> str | None:
    """The column holding ``{bytes, path}`` structs (``audio`` preferred)."""
    import pyarrow as pa

    names = sorted(schema.names, key=lambda n: n != "audio")
    for name in names:
        kind = schema.field(name).type
        if pa.types.is_struct(kind) and {"bytes", "path"} <= {f.name for f in kind}:
            return name
    return None


def _clip_id(path: str | None) -> str | None:
    """``.../blues.00012.wav`` -> ``blues.00012`` (either slash; only the last suffix goes)."""
    if not path:
        return None
    name = re.split(r"[\\/]", path)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


@functools.lru_cache(maxsize=1)
def _read_parquet_once(stamps: tuple[tuple[str, int, int], ...]) -> dict[str, FoundClip]:
    """:func:`read_parquet`, remembered for unchanged files: the three GTZAN tasks of one run
    then share one copy of the audio bytes (about 1.2 GB for all of GTZAN) instead of three.
    Callers must not mutate the returned mapping."""
    return read_parquet([Path(name) for name, _, _ in stamps])


def read_parquet(files: list[Path]) -> dict[str, FoundClip]:
    """Read GTZAN parquet files with ``datasets`` without decoding audio; clips keep the encoded
    bytes. A row with no bytes (a path-only struct) is a clip this copy does not hold."""
    import pyarrow.parquet as pq
    from datasets import Audio, ClassLabel, load_dataset

    audio_col = _audio_column(pq.read_schema(files[0]))
    dataset = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    if audio_col is None or audio_col not in dataset.features:
        raise MissingDataError(f"{files[0]}: no audio column of {{bytes, path}} structs")
    label_col = next(c for c in LABEL_COLUMNS if c in dataset.features)
    feature = dataset.features[label_col]
    names = [n.lower() for n in feature.names] if isinstance(feature, ClassLabel) else GENRES
    id_cols = [c for c in ID_COLUMNS if c in dataset.features]
    dataset = dataset.cast_column(audio_col, Audio(decode=False))
    dataset = dataset.select_columns([audio_col, label_col, *id_cols])
    found: dict[str, FoundClip] = {}
    for row_number, row in enumerate(dataset):
        audio = row[audio_col] or {}
        clip_id = _clip_id(audio.get("path")) or next(
            (_clip_id(row[c]) for c in id_cols if row[c]), None)
        if clip_id is None:
            raise MissingDataError(f"GTZAN parquet row {row_number}: no file name in the audio "
                                   f"struct's path (nor a {'/'.join(ID_COLUMNS)} column), so "
                                   f"the clip cannot be named.")
        value = row[label_col]
        if isinstance(value, int):
            genre = names[value] if 0 <= value < len(names) else str(value)
        else:
            genre = str(value).strip().lower()
        if genre not in GENRES:
            raise MissingDataError(f"GTZAN parquet clip {clip_id}: genre {value!r} is not one of "
                                   f"{', '.join(GENRES)}.")
        if clip_id in found:
            raise MissingDataError(f"GTZAN parquet files hold clip {clip_id} twice; point embench "
                                   f"at one copy.")
        if audio.get("bytes"):
            found[clip_id] = FoundClip(clip_id, genre, bytes(audio["bytes"]))
    return found
