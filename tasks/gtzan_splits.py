"""GTZAN's split definitions and the cross-validation loop of the ``gtzan-10fold`` task.

Three protocols are in use and their numbers are not comparable, so each is its own task with its
own split id (they share the dataset id, so embeddings are computed once):

- ``fault-filtered`` (Kereliuk, Sturm & Larsen 2015; MARBLE): fixed 443/197/290 lists shipped in
  ``gtzan_data/`` that leave out GTZAN's repeated and mislabelled excerpts.
- ``10fold`` (HEAR): stratified folds over every clip; fold ``k`` is test, fold ``k+1`` (mod the
  fold count) valid, the other eight train; scores are means over the folds.
- ``random-80-20`` (the seed project): stratified 20% test, 10% of all clips as valid carved out of
  the remaining 80%, 70% train.

Why the randomised splits are pure functions of (seed, clip id, genre): a split must not depend
on disk order, on the copy's layout or on which other clips a copy happens to hold, or two copies
would give incomparable numbers. They assign over the union of GTZAN's 1000 canonical names and the
clips present (absent canonical clips become ``ClipSet.missing``), and each genre is shuffled by its
own generator seeded by ``(seed, crc32(genre))``, so a missing clip in one genre moves no clip of
another genre.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

from embench import EmbenchError, EvalContext, Evaluation

GENRES: tuple[str, ...] = (
    "blues", "classical", "country", "disco", "hiphop",
    "jazz", "metal", "pop", "reggae", "rock",
)
CLIPS_PER_GENRE = 100
SPLIT_FILES = {"train": "train_filtered.txt", "valid": "valid_filtered.txt",
               "test": "test_filtered.txt"}
_LIST_LINE = re.compile(r"^(?P<genre>[a-z]+)/(?P<id>(?P=genre)\.\d{5})\.wav$")


def canonical_clips() -> dict[str, str]:
    """GTZAN's 1000 clip ids (``blues.00000`` .. ``rock.00099``) mapped to their genre."""
    return {f"{g}.{i:05d}": g for g in GENRES for i in range(CLIPS_PER_GENRE)}


@functools.cache
def fault_filtered() -> dict[str, tuple[str, str]]:
    """Clip id -> (genre, split) of the fault-filtered split, read from the lists shipped in
    the package (``embench_tasks/gtzan_data/*_filtered.txt``, one ``genre/genre.000NN.wav`` a line).
    """
    folder = resources.files(__package__) / "gtzan_data"
    out: dict[str, tuple[str, str]] = {}
    for split, name in SPLIT_FILES.items():
        for number, line in enumerate((folder / name).read_text().splitlines(), start=1):
            if not line.strip():
                continue
            match = _LIST_LINE.match(line.strip())
            if match is None or match["genre"] not in GENRES:
                raise EmbenchError(f"gtzan_data/{name}:{number}: unexpected entry {line!r}")
            if match["id"] in out:
                raise EmbenchError(f"gtzan_data/{name}:{number}: {match['id']} listed twice")
            out[match["id"]] = (match["genre"], split)
    return out


def _shuffled_by_genre(clips: Mapping[str, str], seed: int
                       ) -> Iterator[tuple[list[str], np.random.Generator]]:
    """Each genre's clip ids (sorted, then permuted by a generator of its own, which is returned
    for further draws), genres in sorted order."""
    by_genre: dict[str, list[str]] = defaultdict(list)
    for clip_id, genre in clips.items():
        by_genre[genre].append(clip_id)
    for genre in sorted(by_genre):
        ids = sorted(by_genre[genre])
        rng = np.random.default_rng([seed, zlib.crc32(genre.encode())])
        yield [ids[i] for i in rng.permutation(len(ids))], rng


def fold_assignment(clips: Mapping[str, str], n_folds: int = 10, seed: int = 0) -> dict[str, int]:
    """Stratified folds: clip id -> fold in ``0..n_folds-1`` for ``clips`` (id -> genre).

    Each genre's shuffled clips are dealt round-robin from a fold drawn by the genre's generator,
    so a genre's count differs by at most one across folds, remainders of different genres land
    on different folds, and the folds of one genre never depend on another genre's clips.
    """
    if n_folds < 3:
        raise ValueError("cross-validation needs at least 3 folds (test, valid and train)")
    folds: dict[str, int] = {}
    for ids, rng in _shuffled_by_genre(clips, seed):
        start = int(rng.integers(n_folds))
        for j, clip_id in enumerate(ids):
            folds[clip_id] = (start + j) % n_folds
    return folds


def fold_split(fold: int, test_fold: int, n_folds: int) -> str:
    """The split of a clip in ``fold`` when ``test_fold`` is held out: the next fold is valid."""
    if fold == test_fold:
        return "test"
    return "valid" if fold == (test_fold + 1) % n_folds else "train"


def random_split(clips: Mapping[str, str], seed: int = 0, test_fraction: float = 0.2,
                 valid_fraction: float = 0.1) -> dict[str, str]:
    """Stratified random split: per genre ``test_fraction`` of the clips are test and
    ``valid_fraction`` of them valid (taken from what would be train), the rest train; counts
    round half up (100 clips: 20 test, 10 valid, 70 train)."""
    out: dict[str, str] = {}
    for ids, _ in _shuffled_by_genre(clips, seed):
        n_test = int(len(ids) * test_fraction + 0.5)
        n_valid = int(len(ids) * valid_fraction + 0.5)
        for j, clip_id in enumerate(ids):
            out[clip_id] = "test" if j < n_test else "valid" if j < n_test + n_valid else "train"
    return out


# -- cross-validation --------------------------------------------------------------------------
def _mean_per_seed(values: Sequence[Mapping[str, list[float]]]) -> dict[str, list[float]]:
    """Element-wise mean over folds of the metrics every fold reported (``[m][i]`` = seed i)."""
    common = [m for m in values[0] if all(m in v for v in values[1:])]
    out: dict[str, list[float]] = {}
    for metric in common:
        lengths = {len(v[metric]) for v in values}
        if len(lengths) != 1:
            raise EmbenchError(f"folds returned different numbers of {metric!r} values: {lengths}")
        out[metric] = [float(np.mean([v[metric][i] for v in values]))
                       for i in range(lengths.pop())]
    return out


def aggregate_folds(evaluations: Sequence[Evaluation], fold_sizes: Sequence[dict[str, int]],
                    about: Mapping[str, Any]) -> Evaluation:
    """One Evaluation from per-fold ones: per seed the mean over folds of each metric (the
    per-seed spread then reflects probe randomness, the fold spread is in the details), baselines
    averaged over folds, flags united; ``details["folds"]`` keeps every fold's own result."""
    if not evaluations:
        raise EmbenchError("cross-validation produced no folds")
    baselines = [e.baselines for e in evaluations]
    flags = list(dict.fromkeys(f for e in evaluations for f in e.flags))
    folds = [
        {"fold": k, "n_clips": sizes, "scores": e.scores, "train_scores": e.train_scores,
         "baselines": e.baselines, "flags": e.flags, "details": e.details}
        for k, (e, sizes) in enumerate(zip(evaluations, fold_sizes, strict=True))
    ]
    return Evaluation(
        scores=_mean_per_seed([e.scores for e in evaluations]),
        train_scores=_mean_per_seed([e.train_scores for e in evaluations])
        if all(e.train_scores for e in evaluations) else {},
        baselines={m: float(np.mean([b[m] for b in baselines]))
                   for m in baselines[0] if all(m in b for b in baselines)},
        details={"cross_validation": dict(about), "folds": folds},
        flags=flags,
    )


def cross_validate(ctx: EvalContext, folds: Mapping[str, int], n_folds: int,
                   protocol: Callable[[EvalContext], Evaluation],
                   about: Mapping[str, Any] | None = None) -> Evaluation:
    """Run ``protocol`` once per fold on a copy of ``ctx`` whose clips carry that fold's
    train/valid/test assignment (``folds``: clip id -> fold), then :func:`aggregate_folds`.

    Every fold gets its own output folder (``fold<k>/``) and split id (``<split id>-fold<k>``) and
    its log lines are prefixed with the fold, so protocols that write files or log stay apart.
    """
    unassigned = [c.id for c in ctx.clips if c.id not in folds]
    if unassigned:
        raise EmbenchError(f"{len(unassigned)} clips have no fold, e.g. {unassigned[:3]}")
    evaluations: list[Evaluation] = []
    sizes: list[dict[str, int]] = []
    for k in range(n_folds):
        clips = [dataclasses.replace(c, split=fold_split(folds[c.id], k, n_folds))
                 for c in ctx.clips]
        fold_set = dataclasses.replace(ctx.clips, clips=clips,
                                       split_id=f"{ctx.clips.split_id}-fold{k}",
                                       missing=list(ctx.clips.missing))
        output_dir = ctx.output_dir / f"fold{k}"
        output_dir.mkdir(parents=True, exist_ok=True)

        def log(message: str, _k: int = k) -> None:
            ctx.log(f"fold {_k}: {message}")

        fold_ctx = dataclasses.replace(ctx, clips=fold_set, output_dir=output_dir, log=log)
        evaluations.append(protocol(fold_ctx))
        sizes.append(fold_set.counts())
    details = {"n_folds": n_folds, "valid_fold": "the fold after the test fold (mod n_folds)",
               "aggregation": "per seed: mean over folds", **(about or {})}
    return aggregate_folds(evaluations, sizes, details)
