"""Typed result records (pydantic v2) with a schema version: what a run writes and the
leaderboard reads. Nothing here is a nested dict of unknown shape except ``details``."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

SCHEMA_VERSION = "1.1"  # 1.1: TaskResult.item_scores (files without it still read)


def _null_is_nan(value: Any) -> Any:
    return math.nan if value is None else value


#: A score that may be NaN (an undefined metric): JSON has no NaN, so it is written as null and
#: read back as NaN, and a run's own file stays readable.
Score = Annotated[float, BeforeValidator(_null_is_nan)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreSummary(_Model):
    """Mean, sample std and a 95% Student-t confidence interval over seeds."""

    mean: Score
    std: Score
    ci95_low: Score
    ci95_high: Score
    n: int

    @property
    def ci95_half_width(self) -> float:
        return (self.ci95_high - self.ci95_low) / 2

    @classmethod
    def from_values(cls, values: list[float]) -> ScoreSummary:
        from embench.stats import mean_ci

        mean, low, high, std = mean_ci(values)
        return cls(mean=mean, std=std, ci95_low=low, ci95_high=high, n=len(values))


class ItemScores(_Model):
    """One metric per test clip and seed, from which each seed's score can be recomputed on any
    resample of the clips: what lets two rows of one table be compared paired on the same clips
    (:mod:`embench.comparison`). The interval of a difference then covers which clips happened
    to be in the test split, not only the spread over seeds (zero for a deterministic probe).

    ``aggregate="mean"``: ``values[s][j]`` is clip ``clip_ids[j]``'s score under ``seeds[s]``
    and the seed's score is their mean (accuracy in percent: 100 or 0 per clip).
    ``aggregate="bleu"``: ``values[s][j]`` is the clip's list of BLEU sufficient statistics
    (:func:`embench.caption_metrics.bleu_item_stats`) and the seed's score is the corpus BLEU
    of their sums."""

    metric: str
    clip_ids: list[str]
    values: list[list[Score | list[Score]]]
    aggregate: Literal["mean", "bleu"] = "mean"

    @model_validator(mode="after")
    def _rectangular(self) -> ItemScores:
        if len(set(self.clip_ids)) != len(self.clip_ids):
            raise ValueError("item_scores.clip_ids repeats a clip id")
        widths = set()
        for s, row in enumerate(self.values):
            if len(row) != len(self.clip_ids):
                raise ValueError(f"item_scores.values[{s}] holds {len(row)} values for "
                                 f"{len(self.clip_ids)} clip ids")
            widths |= {len(v) if isinstance(v, list) else None for v in row}
        if self.aggregate == "mean" and widths - {None}:
            raise ValueError("item_scores with aggregate 'mean' hold one number per clip")
        if self.aggregate == "bleu":
            if len(widths) > 1 or any(w is None or w < 4 or w % 2 for w in widths):
                raise ValueError("item_scores with aggregate 'bleu' hold one list of 2 + 2 x "
                                 "order BLEU statistics per clip, of one length")
            _check_bleu_counts(self.values)
        return self

    def array(self):
        """``[seeds, clips, k]`` float array (k = 1 for ``mean``)."""
        import numpy as np

        values = np.asarray(self.values, dtype=float)
        return values[..., None] if values.ndim == 2 else values

    def seed_scores(self) -> list[float]:
        """Each seed's score over all the clips, recomputed from the values."""
        import numpy as np

        from embench.comparison import AGGREGATES

        values = self.array()
        if values.shape[1] == 0:
            return [math.nan] * len(self.values)
        score = AGGREGATES[self.aggregate]
        return [float(score(np.sum(v, axis=0)[None], v.shape[0])[0]) for v in values]

    def problems(self, seeds: list[int], scores: dict[str, list[float]]) -> list[str]:
        """Why these cannot be the item scores behind ``scores[metric]`` (one per seed)."""
        if self.metric not in scores:
            return [f"item scores for {self.metric!r}, which has no per-seed scores"]
        if len(self.values) != len(seeds) or len(scores[self.metric]) != len(seeds):
            return [f"{len(self.values)} rows of item scores and {len(scores[self.metric])} "
                    f"{self.metric} scores for {len(seeds)} seeds"]
        out = []
        for seed, got, score in zip(seeds, self.seed_scores(), scores[self.metric], strict=True):
            if not (math.isclose(got, score, rel_tol=1e-6, abs_tol=1e-6)
                    or (math.isnan(got) and math.isnan(score))):
                what = "average" if self.aggregate == "mean" else "give a corpus BLEU of"
                out.append(f"seed {seed}: the item scores {what} {got} but the "
                           f"{self.metric} score is {score}")
        return out


def _check_bleu_counts(values: list) -> None:
    """BLEU statistics are counts that hang together: whole and not negative, each order's
    hypothesis n-grams what the hypothesis length gives (sacrebleu: max(0, length - n + 1)),
    and no more matches than n-grams. An edited file fails here, not as a NaN interval."""
    for s, row in enumerate(values):
        for j, stats in enumerate(row):
            order = (len(stats) - 2) // 2
            length = stats[0]
            fine = all(math.isfinite(v) and v >= 0 and float(v).is_integer() for v in stats)
            totals = stats[2 + order:]
            fine = fine and all(totals[n] == max(0.0, length - n) and stats[2 + n] <= totals[n]
                                for n in range(order))
            if not fine:
                raise ValueError(f"item_scores.values[{s}][{j}] = {stats} are not BLEU counts "
                                 f"(whole, not negative, [hypothesis length, reference length, "
                                 f"matches per order, hypothesis n-grams per order = length - n "
                                 f"+ 1], matches at most n-grams)")


class SkippedClip(_Model):
    clip_id: str
    reason: str


class Provenance(_Model):
    embench_version: str
    git_commit: str | None = None
    python: str
    torch: str | None = None
    transformers: str | None = None
    platform: str
    device: str
    started_at: str
    finished_at: str | None = None
    #: when ``embench run --resume`` continued this run (it keeps its id, file and settings)
    resumed_at: list[str] = Field(default_factory=list)
    command_line: list[str] = Field(default_factory=list)
    #: ``EMBENCH_*`` variables set for the run: kernel routes (``EMBENCH_UNFOLD_CONV``,
    #: ``EMBENCH_FIRST_LAYER``, ``EMBENCH_FEATURE_ENCODER``) change embeddings at float rounding
    #: level without changing the cache key, so a reader must see them.
    environment: dict[str, str] = Field(default_factory=dict)
    #: Per encoder, the kernel routes it chose at run time and why (an encoder's optional
    #: ``route_notes()``: ``auto`` routes timed on CUDA); empty when nothing was chosen, e.g. on
    #: the CPU or when every embedding came from the cache.
    kernel_routes: dict[str, list[str]] = Field(default_factory=dict)


class Preprocessing(_Model):
    """How audio became features; part of the cache key and of every result."""

    sample_rate: int
    window_s: float | None
    hop_s: float | None
    frame_rate: float
    compute_dtype: str
    cache_key: str | None = None


class TaskResult(_Model):
    encoder: str
    encoder_revision: str | None = None
    weights: str = "pretrained"
    task: str
    task_version: str
    dataset_id: str
    dataset_revision: str | None = None
    protocol: str
    split_id: str
    main_score: str
    higher_is_better: bool = True
    seeds: list[int]
    scores: dict[str, list[Score]]
    summary: dict[str, ScoreSummary]
    train_scores: dict[str, list[Score]] = Field(default_factory=dict)
    baselines: dict[str, Score] = Field(default_factory=dict)
    n_clips: dict[str, int] = Field(default_factory=dict)
    skipped: list[SkippedClip] = Field(default_factory=list)
    missing: list[SkippedClip] = Field(default_factory=list)
    preprocessing: Preprocessing | None = None
    flags: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    item_scores: ItemScores | None = None
    reported: bool = False
    source: str | None = None
    notes: str | None = None
    #: wall-clock seconds of the whole pair, and of the part spent making sure its features are
    #: cached (extraction; about 0 when every clip came from the cache; None for protocols
    #: that read no cached features). The rest is the protocol's own training and scoring.
    duration_s: float | None = None
    extract_s: float | None = None

    @property
    def main(self) -> ScoreSummary:
        return self.summary[self.main_score]

    @property
    def captioner(self) -> str | None:
        """The T5 a captioning protocol trained (``details["captioner"]``, which both captioning
        protocols write), None for other protocols. ``embench run --captioner`` changes it, and
        scores of different captioners are not comparable, so leaderboards keep them apart."""
        value = self.details.get("captioner")
        return None if value is None else str(value)

    def sort_key(self) -> float:
        value = self.main.mean
        if math.isnan(value):
            return math.inf
        return -value if self.higher_is_better else value


class PairFailure(_Model):
    """An (encoder, task) pair that could not be scored, and why; the run went on without it."""

    encoder: str
    task: str
    protocol: str | None = None
    error_type: str
    reason: str


class RunSpec(_Model):
    encoders: list[str]
    tasks: list[str]
    protocol: str | None = None
    seeds: list[int]
    device: str = "auto"
    weights: str = "pretrained"
    weights_path: str | None = None
    frame_rate: float = 1.0
    window_s: float | None = None
    hop_s: float | None = None
    batch_size: int | Literal["auto"] = "auto"
    compile: bool = False
    #: frozen extraction's arithmetic (embench.precision); the resolved one is in each result's
    #: preprocessing.compute_dtype
    precision: Literal["auto", "fp32", "bf16-autocast", "bf16"] = "auto"
    num_workers: int | None = None
    #: the T5 of captioning protocols (hub id, save_pretrained folder, or "scratch"); None: each
    #: task's own default
    captioner: str | None = None
    world_size: int = 1  # processes that shared the extraction (torchrun)
    data_dir: str
    cache_dir: str
    output_dir: str


class RunResult(_Model):
    schema_version: str = SCHEMA_VERSION
    run_id: str
    provenance: Provenance
    spec: RunSpec | None = None
    results: list[TaskResult] = Field(default_factory=list)
    failures: list[PairFailure] = Field(default_factory=list)


def run_json(run: RunResult) -> str:
    """A result file's text: indented JSON with every list of numbers on one line (per-seed
    scores, confusion-matrix rows, each clip's item scores). Thousands of per-clip values then
    cost a line per seed, not a line per value, and the file stays readable. Parses to exactly
    what ``model_dump_json`` gives (NaN as null included)."""
    import json
    import re
    import secrets

    nonce = secrets.token_hex(8)  # no string in the data can fake a placeholder
    lines: list[str] = []

    def fold(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: fold(value) for key, value in node.items()}
        if not isinstance(node, list):
            return node
        if node and all(v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                        for v in node):
            lines.append(json.dumps(node, separators=(", ", ": ")))
            return f"{nonce}:{len(lines) - 1}"
        return [fold(value) for value in node]

    text = json.dumps(fold(json.loads(run.model_dump_json())), indent=2, ensure_ascii=False)
    return re.sub(f'"{nonce}:(\\d+)"', lambda m: lines[int(m.group(1))], text) + "\n"
