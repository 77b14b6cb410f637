"""Generate GTZAN-shaped data for tests: GTZAN's real file names, tiny audio.

Each clip is 0.5 s of 16-bit mono at 22.05 kHz (so loading resamples like the real data): a tone
whose pitch depends on the genre (half-octave steps from 220 Hz) plus noise, with a per-clip pitch
jitter and level, so a probe has something to learn but not a constant. ``jazz.00054`` is written
as the 15 bytes ``not a RIFF file`` wherever it is requested, as in the common copies. The split
lists are read from ``tasks/gtzan_data`` directly, not through the package under test.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import soundfile as sf

GENRES = ("blues", "classical", "country", "disco", "hiphop",
          "jazz", "metal", "pop", "reggae", "rock")
SAMPLE_RATE = 22_050
SECONDS = 0.5
CORRUPT = "jazz.00054"
CORRUPT_BYTES = b"not a RIFF file"
LISTS = Path(__file__).resolve().parents[1] / "tasks" / "gtzan_data"
LAYOUT_DIRS = {"original": "genres", "kaggle": "Data/genres_original",
               "kaggle-bare": "genres_original", "genre-folders": "."}


def genre_of(clip_id: str) -> str:
    return clip_id.split(".")[0]


def all_names() -> list[str]:
    """GTZAN's 1000 clip ids, genre by genre."""
    return [f"{g}.{i:05d}" for g in GENRES for i in range(100)]


def listed_names() -> dict[str, str]:
    """Clip id -> split of the fault-filtered lists (930 ids)."""
    out = {}
    for split in ("train", "valid", "test"):
        for line in (LISTS / f"{split}_filtered.txt").read_text().split():
            out[line.split("/")[1].removesuffix(".wav")] = split
    return out


def stratified_subset(names: Mapping[str, str] | Iterable[str], per_group: int) -> list[str]:
    """The first ``per_group`` ids (sorted) of every (genre, split) group; ``names`` is an id ->
    split mapping, or plain ids (grouped by genre only)."""
    splits = names if isinstance(names, Mapping) else {n: "" for n in names}
    taken: dict[tuple[str, str], int] = {}
    out = []
    for clip_id in sorted(splits):
        key = (genre_of(clip_id), splits[clip_id])
        if taken.get(key, 0) < per_group:
            taken[key] = taken.get(key, 0) + 1
            out.append(clip_id)
    return out


def tone(clip_id: str) -> np.ndarray:
    """Deterministic audio of one clip (float32, [-1, 1])."""
    rng = np.random.default_rng(zlib.crc32(clip_id.encode()))
    freq = 220.0 * 2 ** (GENRES.index(genre_of(clip_id)) / 2) * (1 + 0.03 * rng.standard_normal())
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    level = rng.uniform(0.2, 0.5)
    audio = level * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
    return np.clip(audio, -1, 1).astype(np.float32)


def wav_bytes(clip_id: str) -> bytes:
    """The clip as a complete WAV file (the corrupt clip as its junk bytes)."""
    if clip_id == CORRUPT:
        return CORRUPT_BYTES
    buf = io.BytesIO()
    sf.write(buf, tone(clip_id), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_folder(root: Path, names: Iterable[str], layout: str = "original") -> Path:
    """Write ``names`` under ``root`` in ``layout`` (a key of LAYOUT_DIRS) as
    ``<genre>/<id>.wav``; returns ``root``."""
    base = root / LAYOUT_DIRS[layout]
    for clip_id in names:
        path = base / genre_of(clip_id) / f"{clip_id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wav_bytes(clip_id))
    return root


def write_parquet(path: Path, names: Iterable[str], label: str = "genre",
                  class_label_metadata: bool = False, files: int = 1) -> Path:
    """Write ``names`` as Hugging Face-style parquet: ``audio`` {bytes, path} structs and either a
    ``genre`` string column or an int ``label`` column (alphabetical genre order; with
    ``class_label_metadata`` the names also go into the schema's ``huggingface`` features
    metadata, reversed, so a reader that ignores the metadata gets the genres wrong).
    ``files > 1`` spreads the rows over that many ``<stem>-<i>.parquet`` files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(names)
    order = list(reversed(GENRES)) if class_label_metadata else list(GENRES)
    path.parent.mkdir(parents=True, exist_ok=True)
    for part in range(files):
        chunk = names[part::files]
        columns: dict[str, list] = {
            "audio": [{"bytes": wav_bytes(n), "path": f"/somewhere/{genre_of(n)}/{n}.wav"}
                      for n in chunk]}
        if label == "genre":
            columns["genre"] = [genre_of(n) for n in chunk]
        else:
            columns["label"] = [order.index(genre_of(n)) for n in chunk]
        table = pa.table(columns)
        if class_label_metadata:
            features = {"audio": {"_type": "Audio"},
                        "label": {"_type": "ClassLabel", "names": order}}
            table = table.replace_schema_metadata(
                {"huggingface": json.dumps({"info": {"features": features}})})
        target = path if files == 1 else path.with_name(f"{path.stem}-{part}.parquet")
        pq.write_table(table, target)
    return path.parent
