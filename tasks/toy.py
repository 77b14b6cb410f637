"""``toy-genres`` and ``toy-captions``: the offline tasks that ``embench run`` uses by default.

Both are synthesised by :mod:`toy_synth` (no download, no network) the first time they are
loaded, into ``<data_dir>/<task name>/v<DATA_VERSION>/`` (16-bit WAVs plus ``metadata.json``).
Generation writes into a temporary sibling directory and appears by one ``os.replace``, so a run
killed mid-generation never leaves a half dataset that a later run would trust; leftovers of dead
generations are removed on the next load.

Splits are fixed and stratified: genres cycle with the clip index, and within each genre the
first 60% of clips are train, the next 20% valid and the last 20% test.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import soundfile as sf

from embench import (
    Clip,
    ClipSet,
    EvalContext,
    Evaluation,
    MissingDataError,
    Task,
    TaskInfo,
    hookimpl,
)
from embench.cache import pid_alive

from . import toy_synth
from .toy_captioning import evaluate_nearest_neighbour

DATA_VERSION = toy_synth.GENERATOR_VERSION
CLIPS_PER_GENRE = 40
SPLIT_FRACTIONS = (0.6, 0.2)  # train, valid; test is the rest
METADATA = "metadata.json"
_TMP_MARK = ".tmp-"


def split_of(index: int, n_clips: int, n_classes: int) -> str:
    """Fixed stratified split: clip ``index`` is the ``index // n_classes``-th of its class."""
    per_class = n_clips // n_classes
    rank = index // n_classes
    n_train = round(SPLIT_FRACTIONS[0] * per_class)
    n_valid = round(SPLIT_FRACTIONS[1] * per_class)
    if rank < n_train:
        return "train"
    return "valid" if rank < n_train + n_valid else "test"


# -- generation on disk ------------------------------------------------------------------------
def _complete(root: Path) -> bool:
    """A dataset directory is trusted only if its metadata lists files that all exist."""
    try:
        meta = json.loads((root / METADATA).read_text())
        return all((root / c["file"]).is_file() for c in meta["clips"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _remove_dead_temporaries(root: Path) -> None:
    for tmp in root.parent.glob(f".{root.name}{_TMP_MARK}*"):
        pid = tmp.name[len(f".{root.name}{_TMP_MARK}") :].split("-")[0]
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_generated(root: Path, build: Callable[[Path], None]) -> None:
    """Make ``root`` hold a complete dataset, calling ``build(tmp_dir)`` only if it does not.

    ``build`` writes everything into an empty directory, which then replaces ``root`` atomically.
    If another process finished first, its (identical, deterministic) result is kept.
    """
    if _complete(root):
        return
    try:
        _generate(root, build)
    except OSError as exc:  # a read-only or full disk: say where, and what to choose instead
        raise MissingDataError(
            f"Cannot generate the toy dataset in {root.parent}: {exc.strerror or exc}. Choose a "
            f"writable folder with --data-dir or EMBENCH_DATA.") from exc
    if not _complete(root):
        raise MissingDataError(f"Generating the toy dataset into {root} failed; delete it, retry.")


def _generate(root: Path, build: Callable[[Path], None]) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(root)
    if root.exists():  # incomplete or damaged (e.g. files deleted by hand): set aside, regenerate
        stale = root.with_name(f".{root.name}{_TMP_MARK}stale-{uuid.uuid4().hex}")
        os.replace(root, stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root.with_name(f".{root.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.replace(tmp, root)
        except OSError:
            if not _complete(root):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_dataset(out: Path, task: str, stream: int, n_clips: int, with_captions: bool) -> None:
    """Synthesise ``n_clips`` clips into ``out``; ``metadata.json`` is written last."""
    (out / "audio").mkdir()
    clips = []
    for index in range(n_clips):
        audio, params = toy_synth.generate_clip(stream, index)
        clip_id = f"{task}-{index:04d}"
        rel = f"audio/{clip_id}.wav"
        sf.write(out / rel, audio, toy_synth.SAMPLE_RATE, subtype="PCM_16")
        record = {
            "id": clip_id,
            "file": rel,
            "split": split_of(index, n_clips, len(toy_synth.GENRES)),
            "label": params.genre,
            "params": params.as_dict(),
        }
        if with_captions:
            record["caption"] = toy_synth.caption(params)
        clips.append(record)
    meta = {
        "task": task,
        "data_version": DATA_VERSION,
        "generator_version": toy_synth.GENERATOR_VERSION,
        "sample_rate": toy_synth.SAMPLE_RATE,
        "clip_seconds": toy_synth.CLIP_SECONDS,
        "stream": stream,
        "clips": clips,
    }
    (out / METADATA).write_text(json.dumps(meta, indent=1))


# -- tasks -------------------------------------------------------------------------------------
class _ToyTask(Task):
    """Shared loading: generate once, then read ``metadata.json`` into a :class:`ClipSet`."""

    stream: int
    with_captions: bool
    target_key: str  # which metadata field is the clip's target
    labels: tuple[str, ...] = ()

    def __init__(self, clips_per_genre: int = CLIPS_PER_GENRE):
        self.n_clips = clips_per_genre * len(toy_synth.GENRES)

    @property
    def _size_tag(self) -> str:
        """Empty for the standard size; a smaller (test) dataset is a different dataset, so it
        gets its own directory and split id and never mixes with the standard one."""
        standard = CLIPS_PER_GENRE * len(toy_synth.GENRES)
        return "" if self.n_clips == standard else f"-n{self.n_clips}"

    def dataset_dir(self, data_dir: Path) -> Path:
        return Path(data_dir) / self.name / f"v{DATA_VERSION}{self._size_tag}"

    def load(self, data_dir: Path) -> ClipSet:
        root = self.dataset_dir(data_dir)

        def build(out: Path) -> None:
            build_dataset(out, self.name, self.stream, self.n_clips, self.with_captions)

        ensure_generated(root, build)
        meta = json.loads((root / METADATA).read_text())
        clips = [
            Clip(id=c["id"], source=root / c["file"], target=c[self.target_key], split=c["split"])
            for c in meta["clips"]
        ]
        return ClipSet(
            dataset_id=self.info.dataset_id,
            split_id=self.split_id,
            clips=clips,
            labels=self.labels,
        )

    @property
    def split_id(self) -> str:
        return f"{self.name}-v{DATA_VERSION}{self._size_tag}-fixed"



class ToyGenres(_ToyTask):
    """Six synthetic genres; clip-level classification with the shared probes."""

    stream = 0
    with_captions = False
    target_key = "label"
    labels = toy_synth.GENRE_NAMES
    info = TaskInfo(
        name="toy-genres",
        dataset_id="embench/toy-genres",
        main_score="accuracy",
        protocols=("probe", "linear"),
        requires_features=("probe", "linear"),
        description=(
            "Offline synthetic genre classification: 6 procedurally generated music-like "
            "classes differing in tempo, drum pattern, timbre and harmony (40 clips each, 4 s, "
            "16 kHz; fixed stratified 60/20/20 split). Generated on first use; no download."
        ),
        dataset_revision=f"generator-v{toy_synth.GENERATOR_VERSION}",
        license="Apache-2.0",
    )

    def evaluate(self, ctx: EvalContext) -> Evaluation:
        from embench import evaluate_classification

        return evaluate_classification(ctx, kind="mlp" if ctx.protocol == "probe" else "linear")


class ToyCaptions(_ToyTask):
    """Synthetic clips with one caption each; scored by nearest-neighbour caption retrieval."""

    stream = 1
    with_captions = True
    target_key = "caption"
    info = TaskInfo(
        name="toy-captions",
        dataset_id="embench/toy-captions",
        main_score="bleu4",
        protocols=("captioner", "nearest-neighbour"),
        requires_features=("captioner", "nearest-neighbour"),
        description=(
            "Offline synthetic captioning: 240 generated music-like clips (4 s, 16 kHz) with "
            "captions stating genre, tempo, key, timbre and drums. 'captioner' (default): a small "
            "T5 trained from scratch on the audio embeddings with a word-level tokenizer built "
            "from the training captions; 'nearest-neighbour': the caption of the closest "
            "training clip. Corpus BLEU-4 (sacrebleu, 13a, lowercase, 0-100) against the "
            "constant-caption and nearest-neighbour baselines."
        ),
        dataset_revision=f"generator-v{toy_synth.GENERATOR_VERSION}",
        license="Apache-2.0",
    )

    def evaluate(self, ctx: EvalContext) -> Evaluation:
        if ctx.protocol == "nearest-neighbour":
            return evaluate_nearest_neighbour(ctx)
        from embench import evaluate_captioning

        return evaluate_captioning(ctx, captioner="scratch")


@hookimpl
def register_tasks(register):
    register(ToyGenres())
    register(ToyCaptions())
