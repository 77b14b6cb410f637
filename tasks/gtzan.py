"""GTZAN music genre classification (Tzanetakis & Cook 2002): 1000 30-s clips, 10 genres.

Three tasks, one per split protocol, because their numbers are not comparable (see
:mod:`gtzan_splits`); all share the dataset id ``gtzan`` so an encoder's embeddings are computed
once and reused by each:

- ``gtzan`` (default): the fault-filtered split (443 train / 197 valid / 290 test), the one MARBLE
  reports; split id ``gtzan-fault-filtered``.
- ``gtzan-10fold``: HEAR-style stratified 10-fold cross-validation over every clip, folds fixed by
  seed 0; split id ``gtzan-10fold-seed0``. ``load`` returns fold 0's assignment (a ClipSet holds
  one split per clip); ``evaluate`` runs all ten folds and reports per-seed means over folds.
- ``gtzan-random-80-20``: the seed project's protocol, a stratified random 80/20 train/test split
  with 10% of all clips moved from train to valid (70/10/20), seed 0; split id
  ``gtzan-random-80-20-seed0``.

Where the data goes and which layouts are understood: :mod:`gtzan_layouts`. Clip ids are file
stems (``blues.00012``), targets genre names. Clips a split names but the copy lacks are listed in
``ClipSet.missing`` with the reason; corrupt audio (``jazz.00054.wav``) is skipped by the core
during extraction, with the reason in the results.

Protocols: ``probe`` (the shared MLP probe), ``linear`` (logistic regression) and ``finetune``
(the shared fine-tuning protocol, which loads the encoder itself).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path

from embench import (
    Clip,
    ClipSet,
    EmbenchError,
    EvalContext,
    Evaluation,
    Task,
    TaskInfo,
    hookimpl,
)

from .gtzan_layouts import FoundClip, find_copy
from .gtzan_splits import (
    GENRES,
    canonical_clips,
    cross_validate,
    fault_filtered,
    fold_assignment,
    fold_split,
    random_split,
)

DATASET_ID = "gtzan"
HOMEPAGE = "http://marsyas.info/downloads/datasets.html"
GTZAN_CITATION = (
    "G. Tzanetakis and P. Cook. Musical genre classification of audio signals. IEEE "
    "Transactions on Speech and Audio Processing, 10(5):293-302, 2002."
)
FAULT_FILTERED_CITATION = (
    "C. Kereliuk, B. L. Sturm and J. Larsen. Deep learning and music adversaries. IEEE "
    "Transactions on Multimedia, 17(11):2059-2071, 2015."
)
HEAR_CITATION = (
    "J. Turian et al. HEAR: Holistic Evaluation of Audio Representations. Proceedings of the "
    "NeurIPS 2021 Competitions and Demonstrations Track, PMLR 176:125-145, 2022."
)
LICENSE = "unspecified (collected for research by the authors; no license granted)"
PROTOCOLS = ("probe", "linear", "finetune")
CHUNK_S = 5.0
_ABOUT = "Music genre classification: 10 genres, 100 clips each, 30 s, 22.05 kHz mono. "


def _info(name: str, description: str, citation: str) -> TaskInfo:
    return TaskInfo(
        name=name, dataset_id=DATASET_ID, main_score="accuracy", protocols=PROTOCOLS,
        description=_ABOUT + description, version="1", requires_features=("probe", "linear"),
        citation=citation, homepage=HOMEPAGE, license=LICENSE,
    )


def run_protocol(ctx: EvalContext) -> Evaluation:
    """Dispatch ``ctx.protocol`` to the shared implementation every classification task uses."""
    if ctx.protocol in ("probe", "linear"):
        from embench import evaluate_classification

        if ctx.protocol == "linear":
            return evaluate_classification(ctx, kind="linear")
        # MARBLE-style: 5 s chunks (MERT's context) for training, clip-level decisions
        return evaluate_classification(ctx, kind="mlp", chunk_s=CHUNK_S)
    if ctx.protocol == "finetune":
        from embench import finetune_classification

        return finetune_classification(ctx)
    raise EmbenchError(f"GTZAN has no protocol {ctx.protocol!r}; choose one of {PROTOCOLS}.")


class _Gtzan(Task):
    """Shared loading: find the copy, assign splits, list what the split names but the copy
    lacks. Subclasses define the split in :meth:`assign`."""

    split_id: str

    @abstractmethod
    def assign(self, found: Mapping[str, str]) -> dict[str, str]:
        """Clip id -> split for every clip of the split definition, present or not (``found``:
        the copy's clip id -> genre). Present clips left out are not part of the split."""

    def places(self, found: Mapping[str, str]) -> dict[str, tuple[str, str]]:
        """Clip id -> (split, where the definition puts it, in words for a missing clip's
        reason)."""
        return {cid: (split, f"the {split} split") for cid, split in self.assign(found).items()}

    def load(self, data_dir: Path) -> ClipSet:
        copy = find_copy(Path(data_dir))
        places = sorted(self.places({cid: c.genre for cid, c in copy.clips.items()}).items())
        clips = [_clip(copy.clips[cid], split) for cid, (split, _) in places if cid in copy.clips]
        where = f"the GTZAN copy at {copy.root} ({copy.layout} layout)"
        missing = [(cid, f"not in {where}; {self.split_id} puts it in {place}")
                   for cid, (_, place) in places if cid not in copy.clips]
        return ClipSet(dataset_id=DATASET_ID, split_id=self.split_id, clips=clips,
                       labels=GENRES, missing=missing)

    def evaluate(self, ctx: EvalContext) -> Evaluation:
        return run_protocol(ctx)


def _clip(found: FoundClip, split: str) -> Clip:
    return Clip(id=found.id, source=found.source, target=found.genre, split=split)  # type: ignore[arg-type]


def _with_canonical(found: Mapping[str, str]) -> dict[str, str]:
    """GTZAN's 1000 names plus whatever else the copy holds (its genre wins for shared ids)."""
    return {**canonical_clips(), **found}


class GtzanFaultFiltered(_Gtzan):
    """The fault-filtered split (Kereliuk, Sturm & Larsen 2015), as MARBLE uses it."""

    split_id = "gtzan-fault-filtered"
    info = _info(
        "gtzan",
        "Fault-filtered split (Kereliuk et al. 2015; MARBLE): 443 train / 197 valid / 290 test, "
        "leaving out repeated and mislabelled excerpts.",
        f"{GTZAN_CITATION}\n{FAULT_FILTERED_CITATION}",
    )

    def assign(self, found: Mapping[str, str]) -> dict[str, str]:
        return {cid: split for cid, (_, split) in fault_filtered().items()}


class GtzanTenFold(_Gtzan):
    """HEAR-style 10-fold cross-validation; fold ``k`` test, fold ``k+1`` valid, the rest train."""

    info = _info(
        "gtzan-10fold",
        "HEAR-style stratified 10-fold cross-validation over all clips (folds fixed by seed 0; "
        "each fold is test once, the next fold valid, eight train); scores are means over folds.",
        f"{GTZAN_CITATION}\n{HEAR_CITATION}",
    )

    def __init__(self, n_folds: int = 10, seed: int = 0):
        self.n_folds, self.seed = n_folds, seed
        self.split_id = f"gtzan-{n_folds}fold-seed{seed}"

    def folds(self, found: Mapping[str, str]) -> dict[str, int]:
        return fold_assignment(_with_canonical(found), self.n_folds, self.seed)

    def assign(self, found: Mapping[str, str]) -> dict[str, str]:
        return {cid: split for cid, (split, _) in self.places(found).items()}

    def places(self, found: Mapping[str, str]) -> dict[str, tuple[str, str]]:
        return {cid: (fold_split(fold, 0, self.n_folds), f"fold {fold}")
                for cid, fold in self.folds(found).items()}

    def evaluate(self, ctx: EvalContext) -> Evaluation:
        if ctx.protocol not in PROTOCOLS:
            return run_protocol(ctx)  # raises the unknown-protocol error before any fold runs
        folds = self.folds({c.id: str(c.target) for c in ctx.clips})
        about = {"fold_seed": self.seed, "split_id": self.split_id,
                 "note": "the result's n_clips are fold 0's; every fold's are in details"}
        return cross_validate(ctx, folds, self.n_folds, run_protocol, about)


class GtzanRandom8020(_Gtzan):
    """The seed project's stratified random 80/20 split, with 10% of all clips as valid."""

    info = _info(
        "gtzan-random-80-20",
        "Stratified random split as in the seed project: 20% test, 10% valid carved out of the "
        "80% train (70/10/20), seed 0.",
        GTZAN_CITATION,
    )

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.split_id = f"gtzan-random-80-20-seed{seed}"

    def assign(self, found: Mapping[str, str]) -> dict[str, str]:
        return random_split(_with_canonical(found), self.seed)


@hookimpl
def register_tasks(register):
    register(GtzanFaultFiltered(), aliases=("gtzan-fault-filtered",))
    register(GtzanTenFold())
    register(GtzanRandom8020())
