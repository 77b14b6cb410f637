"""The embedding cache: fp16 safetensors shards, written atomically, keyed by everything that
changes the numbers.

Layout: ``<root>/<encoder>/<key digest>/key.json`` plus ``shard-*.safetensors``. Each shard holds
one tensor per (clip, layer) named ``<clip id>#L<layer>`` (``[frames, dim]``, fp16) and lists its
clips in the safetensors metadata. A shard appears only by ``os.replace`` of a fully written,
fsynced temporary file, so a run killed at any moment leaves complete shards or none, and the
next run redoes only the clips no complete shard holds. No pickle anywhere.

Each clip's entry also records a fingerprint of its audio (:func:`source_fingerprint`): a file
repaired, replaced or re-encoded under the same clip id is embedded again instead of being
served the old file's embeddings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CACHE_FORMAT_VERSION = 1
_TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class CacheKey:
    """Everything that changes an embedding. Two runs share cache entries only if all match."""

    encoder: str
    encoder_version: str
    weights: str
    revision: str | None
    sample_rate: int
    window_s: float | None
    hop_s: float | None
    frame_rate: float
    compute_dtype: str
    dataset_id: str
    dataset_revision: str | None
    weights_source: str | None = None  # local checkpoint fingerprint (pretrained weights only)
    format_version: int = CACHE_FORMAT_VERSION

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def weights_fingerprint(weights_path: str | None) -> str | None:
    """Identify a local checkpoint folder by its files' names, sizes and modification times, so
    embeddings from a replaced or fine-tuned checkpoint never reuse entries of another."""
    if not weights_path:
        return None
    root = Path(weights_path).expanduser().resolve()
    entries = sorted(
        f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in root.rglob("*") if p.is_file()
    )
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
    return f"{root}#{digest}"


#: Bytes of the source read for its fingerprint, at the start (the header and the first
#: samples), the middle and the end.
FINGERPRINT_BLOCK = 4096


def source_fingerprint(source: Path | bytes, start_s: float | None = None,
                       end_s: float | None = None) -> str:
    """The size of a clip's encoded audio and a hash of three 4 KiB blocks of it (start,
    middle, end), plus its crop. Cheap enough to compute for every clip on every run (12 KiB
    read per file), unchanged by copying or touching the file (so a dataset moved to another
    disk keeps its cache), and changed by truncation, re-encoding or damage to the header; a
    same-size edit that misses all three blocks goes unseen."""
    digest = hashlib.blake2b(digest_size=8)
    if isinstance(source, bytes | bytearray):
        size = len(source)
        blocks = [source[o:o + FINGERPRINT_BLOCK] for o in _block_offsets(size)]
    else:
        try:
            size = os.stat(source).st_size
            with open(source, "rb") as fh:
                blocks = []
                for offset in _block_offsets(size):
                    fh.seek(offset)
                    blocks.append(fh.read(FINGERPRINT_BLOCK))
        except OSError:
            return "unreadable"  # decoding reports it; the clip is not cached anyway
    for block in blocks:
        digest.update(block)
    return f"{size}:{digest.hexdigest()}:{start_s}:{end_s}"


def _block_offsets(size: int) -> list[int]:
    return sorted({0, max(0, size // 2 - FINGERPRINT_BLOCK // 2), max(0, size - FINGERPRINT_BLOCK)})


def tensor_name(clip_id: str, layer: int) -> str:
    return f"{clip_id}#L{layer}"


def _safe_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "_"


def _host_tag() -> str:
    """This machine's name as one dot-free token: ranks on other nodes of a distributed run
    share the cache folder, and their temporaries must not be reaped by this node's pid test."""
    return re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname()) or "host"


def _atomic_write(path: Path, fill: Callable[[Path], None]) -> None:
    """Write ``path`` all or nothing: ``fill`` writes a hidden temporary beside it (named for
    this host and process, so an interrupted write is litter the cache recognises and reaps),
    which is synced to disk, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{_host_tag()}-{os.getpid()}.{uuid.uuid4().hex}"
                         f"{_TMP_SUFFIX}")
    fill(tmp)
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class EmbeddingCache:
    """One cache directory for one :class:`CacheKey`.

    ``fingerprints`` (clip id -> :func:`source_fingerprint` of its audio now): entries written
    for other audio under the same id do not count as cached, and new entries record them.
    Without it (a reader that does not know the sources), any entry of a clip id counts.
    """

    def __init__(self, root: Path, key: CacheKey, fingerprints: dict[str, str] | None = None):
        self.key = key
        self.dir = Path(root) / _safe_dirname(key.encoder) / key.digest()
        self.fingerprints = fingerprints
        self._index: dict[str, tuple[Path, float]] | None = None

    # -- reading -------------------------------------------------------------------------------
    def index(self) -> dict[str, tuple[Path, float]]:
        """clip id -> (shard path, duration in seconds) of its current entry, read from shard
        headers only."""
        if self._index is None:
            from safetensors import safe_open

            index: dict[str, tuple[Path, float]] = {}
            for shard in sorted(self.dir.glob("shard-*.safetensors")):
                try:
                    with safe_open(str(shard), framework="numpy") as fh:
                        meta = fh.metadata() or {}
                except Exception:  # a foreign or damaged file: ignore it, its clips are redone
                    continue
                for clip_id, duration, *fingerprint in json.loads(meta.get("clips", "[]")):
                    if self._current(clip_id, fingerprint[0] if fingerprint else None):
                        index.setdefault(clip_id, (shard, float(duration)))
            self._index = index
        return self._index

    def _current(self, clip_id: str, fingerprint: str | None) -> bool:
        """Whether an entry written with ``fingerprint`` holds the clip's audio as it is now."""
        if self.fingerprints is None or clip_id not in self.fingerprints:
            return True
        return fingerprint == self.fingerprints[clip_id]

    def done_ids(self) -> set[str]:
        return set(self.index())

    def read(self, clip_id: str, layers: list[int] | None = None) -> list[np.ndarray]:
        """The per-layer ``[frames, dim]`` fp16 arrays of one clip."""
        from safetensors import safe_open

        shard, _ = self.index()[clip_id]
        with safe_open(str(shard), framework="numpy") as fh:
            if layers is None:
                layers = list(range(int(json.loads(fh.metadata()["num_layers"]))))
            return [fh.get_tensor(tensor_name(clip_id, layer)) for layer in layers]

    def read_many(self, clip_ids: list[str], layer: int) -> list[np.ndarray]:
        """One layer of many clips, opening each shard once."""
        from safetensors import safe_open

        index = self.index()
        by_shard: dict[Path, list[str]] = {}
        for cid in clip_ids:
            by_shard.setdefault(index[cid][0], []).append(cid)
        out: dict[str, np.ndarray] = {}
        for shard, ids in by_shard.items():
            with safe_open(str(shard), framework="numpy") as fh:
                for cid in ids:
                    out[cid] = fh.get_tensor(tensor_name(cid, layer))
        return [out[cid] for cid in clip_ids]

    # -- writing -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the directory, record the key in clear, and drop temporaries of dead runs."""
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.exists():
            text = json.dumps(asdict(self.key), indent=2)
            _atomic_write(key_file, lambda tmp: tmp.write_text(text))
        for tmp in self.dir.glob(f".*{_TMP_SUFFIX}"):
            owner = tmp.name.split(".")[-3] if tmp.name.count(".") >= 3 else ""
            host, _, pid = owner.rpartition("-")  # no host: written before hosts were recorded
            if host and host != _host_tag():
                continue  # another node's write, perhaps in progress
            if not pid.isdigit() or not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)

    def write_shard(self, clips: dict[str, tuple[float, list[np.ndarray]]]) -> Path:
        """Atomically write one shard: ``clip id -> (duration_s, per-layer [frames, dim])``.

        Straight to the file with ``save_file``: ``save`` built the shard as bytes and then copied
        them, holding the GIL throughout (54-73 ms at a time for a 100 MB MERT-95M shard, which
        stalls the decode threads and the thread launching GPU work), and took 4-6x as long
        (``benchmarks/test_shard_write_speed.py``, 2 CPU cores)."""
        from safetensors.numpy import save_file

        if not clips:
            raise ValueError("write_shard needs at least one clip")
        num_layers = {len(layers) for _, layers in clips.values()}
        if len(num_layers) != 1:
            raise ValueError("all clips in a shard must have the same number of layers")
        tensors = {
            tensor_name(cid, i): np.ascontiguousarray(arr, dtype=np.float16)
            for cid, (_, layers) in clips.items()
            for i, arr in enumerate(layers)
        }
        metadata = {
            "format": str(CACHE_FORMAT_VERSION),
            "key": self.key.digest(),
            "num_layers": str(num_layers.pop()),
            "clips": json.dumps([[cid, float(dur), (self.fingerprints or {}).get(cid)]
                                 for cid, (dur, _) in clips.items()]),
        }
        path = self.dir / f"shard-{uuid.uuid4().hex}.safetensors"
        _atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        if self._index is not None:
            for cid, (dur, _) in clips.items():
                self._index[cid] = (path, float(dur))  # the entry just made is the current one
        return path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists: temporary files named after a dead writer are litter.
    Shared with the toy task's dataset generation."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OverflowError:  # not a pid at all
        return False
    return True
