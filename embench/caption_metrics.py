"""Captioning metrics and the baselines every captioning score must be read against.

Why one shared module: BLEU, METEOR and ROUGE-L numbers are only comparable when tokenisation,
case and averaging match, so every captioning protocol scores through :func:`caption_metrics`.

Conventions (one reference per item; all scores x100 on a 0-100 scale, like published tables):

- ``bleu1`` .. ``bleu4``: corpus BLEU with sacrebleu (13a tokenizer, lowercased, default ``exp``
  smoothing); BLEU-n is ``BLEU(max_ngram_order=n)``. Report :func:`bleu_signature` beside them.
- ``meteor``: nltk's ``meteor_score`` with its defaults (alpha .9, beta 3, gamma .5, WordNet
  synonyms), averaged over items. This is **not** the official METEOR 1.5 (Java, used by
  coco-caption): nltk's defaults score about 2x higher, so only compare with nltk numbers.
- ``rouge_l``: sentence ROUGE-L F1 (beta 1, as the ``rouge-score`` package; coco-caption uses
  beta 1.2), averaged over items. Own LCS code to avoid a dependency.
- ``wer``: ``jiwer.wer`` on the same tokens; a diagnostic only - it is unbounded (can exceed 100).
- Degeneration checks (not x100): ``distinct_ratio`` (distinct hypotheses / items), ``vocab_size``
  (distinct hypothesis tokens) and ``mean_length`` (tokens per hypothesis). A captioner that emits
  one caption for every clip can still get a respectable BLEU; these make that visible.

METEOR, ROUGE-L, WER and the degeneration checks share one tokeniser: lowercased runs of letters
and digits (with inner apostrophes), punctuation dropped - as coco-caption's tokeniser does. It
needs no nltk ``punkt`` data.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from embench.errors import EmbenchError

if TYPE_CHECKING:
    from sacrebleu.metrics import BLEU

MAX_CONSTANT_CANDIDATES = 200
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_STD_FLOOR = 1e-6  # constant feature dimensions standardise to 0 instead of dividing by 0
WORDNET_HELP = (
    "METEOR needs the WordNet corpus for nltk, which was not found in nltk's data path "
    "({path}). Offline: run `scripts/setup_wordnet.sh [NLTK_DATA_DIR]` (installs the Debian "
    "packages wordnet-base and wordnet-sense-index, copies them into "
    "<NLTK_DATA_DIR>/corpora/wordnet and writes the lexnames file nltk needs), then "
    "`export NLTK_DATA=<NLTK_DATA_DIR>`. With network access: `python -m nltk.downloader wordnet`."
)


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens, punctuation dropped (the tokeniser all non-BLEU metrics share)."""
    return _TOKEN.findall(text.lower())


@functools.cache
def _bleu(order: int) -> BLEU:
    """One shared scorer per order: building one (tokenizer set-up) costs more than scoring."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="13a", lowercase=True, max_ngram_order=order)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], order: int = 4) -> float:
    """Corpus BLEU-``order`` (one reference per hypothesis), 0-100."""
    return float(_bleu(order).corpus_score(list(hypotheses), [list(references)]).score)


def bleu_item_stats(hypotheses: Sequence[str], references: Sequence[str],
                    order: int = 4) -> list[list[int]]:
    """Each item's BLEU sufficient statistics, exactly as sacrebleu sums them into
    :func:`corpus_bleu`: ``[hypothesis length, reference length, matching 1..order-grams,
    hypothesis 1..order-grams]``. Summed over any resample of the items, they give that
    resample's corpus BLEU (:func:`bleu_from_stats`): what a paired bootstrap of BLEU needs.
    (``_extract_corpus_statistics`` is the method sacrebleu's own significance tests use.)"""
    stats = _bleu(order)._extract_corpus_statistics(list(hypotheses), [list(references)])
    return [[int(v) for v in row] for row in stats]


def bleu_from_stats(sums: np.ndarray) -> np.ndarray:
    """sacrebleu's ``BLEU.compute_bleu`` (``exp`` smoothing, no effective order), vectorised over
    the rows of ``sums`` ``[rows, 2 + 2 * order]``: each row the summed statistics of
    :func:`bleu_item_stats`. Counts, not averages: the smoothing of an order without a match
    depends on the n-gram total."""
    sums = np.asarray(sums, dtype=float)
    order = (sums.shape[1] - 2) // 2
    sys_len, ref_len = sums[:, 0], sums[:, 1]
    correct, total = sums[:, 2:2 + order], sums[:, 2 + order:2 + 2 * order]
    with np.errstate(divide="ignore", invalid="ignore"):
        brevity = np.where(sys_len < ref_len,
                           np.where(sys_len > 0, np.exp(1 - ref_len / sys_len), 0.0), 1.0)
        alive = np.ones(len(sums), dtype=bool)  # sacrebleu stops at the first empty order
        smooth = np.ones(len(sums))
        logs = np.empty_like(correct)
        for n in range(order):
            alive &= total[:, n] > 0
            zero = correct[:, n] == 0
            smooth = np.where(alive & zero, smooth * 2, smooth)
            precision = np.where(zero, 100.0 / (smooth * total[:, n]),
                                 100.0 * correct[:, n] / total[:, n])
            logs[:, n] = np.where(alive, np.log(np.where(alive, precision, 1.0)), -9999999999.0)
        score = brevity * np.exp(logs.sum(axis=1) / order)
    return np.where(correct.any(axis=1), score, 0.0)


def bleu_signature() -> str:
    """sacrebleu's signature for the BLEU scores here (BLEU-n differ only in max n-gram order).

    sacrebleu only knows the reference count after scoring, so score a one-item corpus first.
    """
    scorer = _bleu(4)
    if getattr(scorer, "num_refs", 0) in (0, None):
        scorer.corpus_score(["a"], [["a"]])
    return str(scorer.get_signature())


def require_wordnet() -> None:
    """Raise :class:`EmbenchError` saying how to install WordNet when nltk cannot find it.

    Checked up front (including ``lexnames``, which Debian's copy lacks) so a missing corpus is
    one clear message rather than nltk's LookupError deep inside the METEOR loop.
    """
    import nltk

    try:
        nltk.data.find("corpora/wordnet/lexnames")
        nltk.data.find("corpora/wordnet/data.noun")
    except LookupError:
        raise EmbenchError(WORDNET_HELP.format(path=", ".join(nltk.data.path))) from None


def meteor(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean nltk METEOR (defaults alpha .9, beta 3, gamma .5) x100; ~2x official METEOR 1.5."""
    require_wordnet()
    from nltk.corpus import wordnet
    from nltk.translate.meteor_score import meteor_score

    scores = [
        meteor_score([tokenize(ref)], tokenize(hyp), wordnet=wordnet)
        for hyp, ref in zip(hypotheses, references, strict=True)
    ]
    return 100.0 * float(np.mean(scores))


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) dynamic programme)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean sentence ROUGE-L F1 x100 (0 for an item where either side has no tokens)."""
    scores = []
    for hyp, ref in zip(hypotheses, references, strict=True):
        h, r = tokenize(hyp), tokenize(ref)
        lcs = _lcs_length(h, r)
        if lcs == 0:
            scores.append(0.0)
            continue
        p, rec = lcs / len(h), lcs / len(r)
        scores.append(2 * p * rec / (p + rec))
    return 100.0 * float(np.mean(scores))


def wer(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus WER x100 with jiwer on the shared tokens; unbounded, a diagnostic only."""
    import jiwer

    refs = [" ".join(tokenize(r)) for r in references]
    if not all(refs):
        raise ValueError("WER needs every reference to contain at least one word")
    return 100.0 * float(jiwer.wer(refs, [" ".join(tokenize(h)) for h in hypotheses]))


def degeneration_stats(hypotheses: Sequence[str]) -> dict[str, float]:
    """Distinct-caption ratio, hypothesis vocabulary size and mean length in tokens."""
    tokens = [tokenize(h) for h in hypotheses]
    return {
        "distinct_ratio": len(set(hypotheses)) / len(hypotheses),
        "vocab_size": float(len({t for ts in tokens for t in ts})),
        "mean_length": float(np.mean([len(ts) for ts in tokens])),
    }


def caption_metrics(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """All captioning metrics for paired hypotheses and references (see the module docstring).

    Raises :class:`EmbenchError` (before computing anything) when WordNet is missing, since a
    report without METEOR is not comparable with the published tables.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("caption_metrics needs at least one hypothesis")
    require_wordnet()
    out = {f"bleu{n}": corpus_bleu(hypotheses, references, n) for n in range(1, 5)}
    out["meteor"] = meteor(hypotheses, references)
    out["rouge_l"] = rouge_l(hypotheses, references)
    out["wer"] = wer(hypotheses, references)
    out.update(degeneration_stats(hypotheses))
    return out


_METRICS: dict[str, Callable[[Sequence[str], Sequence[str]], float]] = {
    **{f"bleu{n}": functools.partial(corpus_bleu, order=n) for n in range(1, 5)},
    "meteor": meteor,
    "rouge_l": rouge_l,
}


def constant_caption(
    train_captions: Sequence[str], valid_refs: Sequence[str], metric: str = "bleu4"
) -> str:
    """The training caption that scores best on validation when used for every validation clip.

    Why: a captioner must beat the best input-independent answer to show it uses the audio.
    For speed at most ``MAX_CONSTANT_CANDIDATES`` (200) distinct captions are tried: when there
    are more, an evenly spaced, deterministic sample of the sorted distinct captions. Ties go to
    the first candidate in sorted order.
    """
    if metric not in _METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(_METRICS)}")
    candidates = sorted(set(train_captions))
    if not candidates or not valid_refs:
        raise ValueError("constant_caption needs training captions and validation references")
    if len(candidates) > MAX_CONSTANT_CANDIDATES:
        picks = np.linspace(0, len(candidates) - 1, MAX_CONSTANT_CANDIDATES).round().astype(int)
        candidates = [candidates[i] for i in picks]
    score = _METRICS[metric]
    best, best_score = candidates[0], -np.inf
    for cand in candidates:
        s = score([cand] * len(valid_refs), valid_refs)
        if s > best_score:
            best, best_score = cand, s
    return best


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardise with train statistics, then L2-normalise rows so a dot product is cosine.

    Standardising first stops a few large-variance dimensions from dominating the cosine.
    """
    mean = train.mean(axis=0)
    std = np.maximum(train.std(axis=0), _STD_FLOOR)
    out = []
    for x in (train, *others):
        z = (np.asarray(x, dtype=np.float64) - mean) / std
        out.append(z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12))
    return out


def nearest_neighbour_captions(
    train_feats: np.ndarray, train_captions: Sequence[str], query_feats: np.ndarray
) -> list[str]:
    """Caption each query with its most cosine-similar training clip's caption (first on ties).

    Features are standardised with training statistics only, so no test information leaks.
    """
    train_feats, query_feats = np.asarray(train_feats), np.asarray(query_feats)
    if train_feats.ndim != 2 or query_feats.ndim != 2:
        raise ValueError("features must be 2-D arrays [clips, dims]")
    if len(train_feats) != len(train_captions):
        raise ValueError(f"{len(train_feats)} training rows but {len(train_captions)} captions")
    if train_feats.shape[1] != query_feats.shape[1]:
        raise ValueError("training and query features have different dimensions")
    train_z, query_z = _standardise(train_feats, query_feats)
    nearest = np.argmax(query_z @ train_z.T, axis=1)
    return [train_captions[i] for i in nearest]
