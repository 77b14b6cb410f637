"""The ``nearest-neighbour`` captioning protocol: caption a clip with its closest training clip's.

Why retrieval instead of a trained decoder: it has no hyper-parameters but the layer, is fully
deterministic, and directly measures what captioning needs from an embedding - that clips which
sound alike (same tempo, timbre, drums, key) sit close together. It is scored with corpus BLEU-4
(sacrebleu, 13a tokenizer, lowercased, on sacrebleu's 0-100 scale) and compared with the best
*constant* caption, so an embedding that carries no information cannot look good.

Selection on validation only: the layer is the one whose retrieval maximises validation BLEU
(ties: the lowest layer), and the constant caption is the training caption that maximises
validation BLEU. Test is scored once, with those choices.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embench import Clip, EvalContext, Evaluation

if TYPE_CHECKING:
    from sacrebleu.metrics import BLEU

FLAG_NOT_BEATING_CONSTANT = "does-not-beat-constant-caption"
_STD_FLOOR = 1e-6  # constant feature dimensions standardise to 0 instead of dividing by 0


@functools.cache
def _bleu() -> BLEU:
    """One shared scorer: building it (tokenizer set-up) costs more than scoring 50 captions."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="13a", lowercase=True)


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU-4, one reference per hypothesis; 0-100 like every published sacrebleu score."""
    return float(_bleu().corpus_score(hypotheses, [references]).score)


def bleu_signature() -> str:
    return str(_bleu().get_signature())


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardise with train statistics, then L2-normalise rows so a dot product is cosine."""
    mean = train.mean(axis=0)
    std = np.maximum(train.std(axis=0), _STD_FLOOR)
    out = []
    for x in (train, *others):
        z = (x.astype(np.float64) - mean) / std
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        out.append(z / np.maximum(norm, 1e-12))
    return out


def nearest_train_index(train: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query's most cosine-similar training row (first one on ties)."""
    train_z, query_z = _standardise(train, queries)
    return np.argmax(query_z @ train_z.T, axis=1)


def best_constant_caption(candidates: list[str], references: list[str]) -> tuple[str, float]:
    """The candidate that, used for every clip, scores the highest BLEU (first on ties)."""
    best, best_score = candidates[0], -1.0
    for cand in candidates:
        score = corpus_bleu([cand] * len(references), references)
        if score > best_score:
            best, best_score = cand, score
    return best, best_score


def _word_stats(hypotheses: list[str]) -> tuple[float, float]:
    """(distinct-caption ratio, mean length in words)."""
    distinct = len(set(hypotheses)) / len(hypotheses)
    mean_len = float(np.mean([len(h.split()) for h in hypotheses]))
    return distinct, mean_len


def evaluate_nearest_neighbour(ctx: EvalContext) -> Evaluation:
    """Score ``ctx.features`` by nearest-neighbour caption retrieval; see the module docstring.

    Retrieval has no randomness, so every seed gets the same numbers: ``ctx.seeds`` is honoured
    by returning one (identical) score per seed, which keeps the result format uniform across
    tasks and gives an honest zero-width interval over seeds.
    """
    features = ctx.features
    if features is None:
        raise ValueError("the nearest-neighbour protocol needs cached features (ctx.features)")
    skipped = set(features.skipped)
    available = set(features.clip_ids) - skipped
    by_split: dict[str, list[Clip]] = {
        s: [c for c in ctx.clips.split(s) if c.id in available] for s in ("train", "valid", "test")
    }
    for split, clips in by_split.items():
        if not clips:
            raise ValueError(f"nearest-neighbour captioning: no usable {split} clips")
    train, valid, test = by_split["train"], by_split["valid"], by_split["test"]
    train_caps = [str(c.target) for c in train]
    valid_refs = [str(c.target) for c in valid]
    test_refs = [str(c.target) for c in test]
    ids = {s: [c.id for c in clips] for s, clips in by_split.items()}

    # layer selection on validation
    valid_bleu: list[float] = []
    for layer in range(features.num_layers):
        nn = nearest_train_index(
            features.clip_means(layer, ids["train"]), features.clip_means(layer, ids["valid"])
        )
        valid_bleu.append(corpus_bleu([train_caps[i] for i in nn], valid_refs))
    layer = int(np.argmax(valid_bleu))

    # test, once
    nn = nearest_train_index(
        features.clip_means(layer, ids["train"]), features.clip_means(layer, ids["test"])
    )
    hypotheses = [train_caps[i] for i in nn]
    bleu = corpus_bleu(hypotheses, test_refs)
    distinct, mean_len = _word_stats(hypotheses)

    constant, constant_valid = best_constant_caption(sorted(set(train_caps)), valid_refs)
    constant_bleu = corpus_bleu([constant] * len(test_refs), test_refs)

    _write_captions(
        Path(ctx.output_dir) / "captions.jsonl",
        [
            {"clip_id": c.id, "reference": ref, "hypothesis": hyp, "neighbour": train[i].id}
            for c, ref, hyp, i in zip(test, test_refs, hypotheses, nn, strict=True)
        ],
    )
    ctx.log(
        f"nearest-neighbour: layer {layer} (valid BLEU {valid_bleu[layer]:.2f}); "
        f"test BLEU {bleu:.2f} vs constant caption {constant_bleu:.2f}"
    )
    n_seeds = len(ctx.seeds)
    flags = [] if bleu > constant_bleu else [FLAG_NOT_BEATING_CONSTANT]
    return Evaluation(
        scores={
            "bleu4": [bleu] * n_seeds,
            "distinct_ratio": [distinct] * n_seeds,
            "mean_length": [mean_len] * n_seeds,
        },
        baselines={"constant-caption": constant_bleu},
        details={
            "layer": layer,
            "valid_bleu4_per_layer": valid_bleu,
            "constant_caption": constant,
            "constant_caption_valid_bleu4": constant_valid,
            "n_clips": {s: len(c) for s, c in by_split.items()},
            "bleu_signature": bleu_signature(),
            "deterministic": "nearest-neighbour retrieval has no randomness; all seeds are equal",
        },
        flags=flags,
    )


def _write_captions(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
