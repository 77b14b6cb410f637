"""Captioning metrics against hand-computed values, the WordNet error path and the baselines.

METEOR values need WordNet for nltk: CI runs ``scripts/setup_wordnet.sh`` and exports NLTK_DATA;
elsewhere those tests skip with a reason instead of failing on machine state.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from embench.caption_metrics import (
    MAX_CONSTANT_CANDIDATES,
    bleu_from_stats,
    bleu_item_stats,
    bleu_signature,
    caption_metrics,
    constant_caption,
    corpus_bleu,
    degeneration_stats,
    meteor,
    nearest_neighbour_captions,
    require_wordnet,
    rouge_l,
    tokenize,
    wer,
)
from embench.errors import EmbenchError


def _has_wordnet() -> bool:
    try:
        require_wordnet()
    except EmbenchError:
        return False
    return True


needs_wordnet = pytest.mark.skipif(
    not _has_wordnet(),
    reason="WordNet for nltk not found: run scripts/setup_wordnet.sh and export NLTK_DATA",
)


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A Loud, distorted guitar -- isn't it?") == [
        "a",
        "loud",
        "distorted",
        "guitar",
        "isn't",
        "it",
    ]


def test_perfect_match_is_100_bleu_at_every_order():
    caps = ["a man plays a loud electric guitar solo", "soft piano with a slow tempo"]
    for n in range(1, 5):
        assert corpus_bleu(caps, caps, n) == pytest.approx(100.0)


def test_bleu_hand_computed():
    hyp, ref = ["the cat sat on a mat"], ["The cat sat on the mat"]
    # unigrams: the, cat, sat, on, mat match (a does not) -> 5/6; equal lengths -> BP 1
    assert corpus_bleu(hyp, ref, 1) == pytest.approx(100 * 5 / 6)
    # bigrams: the cat, cat sat, sat on match of 5 -> sqrt(5/6 * 3/5)
    assert corpus_bleu(hyp, ref, 2) == pytest.approx(100 * math.sqrt(0.5))
    # all unigrams match but 2 of 6 words: brevity penalty exp(1 - 6/2)
    assert corpus_bleu(["the cat"], ref, 1) == pytest.approx(100 * math.exp(-2))


def test_bleu_signature_names_tokenizer_and_case():
    sig = bleu_signature()
    assert "tok:13a" in sig and "case:lc" in sig and "nrefs:1" in sig


def test_rouge_l_hand_computed():
    # LCS("drums bass guitar piano", "drums guitar bass piano vocals") = 3 (drums bass piano)
    # P = 3/4, R = 3/5, F1 = 2PR / (P + R) = 2/3
    hyp, ref = ["Drums, bass, guitar, piano."], ["drums guitar bass piano vocals"]
    assert rouge_l(hyp, ref) == pytest.approx(100 * 2 / 3)
    assert rouge_l(["x y"], ["a b"]) == 0.0
    # mean over items
    assert rouge_l(["a b", "x"], ["a b", "y"]) == pytest.approx(50.0)


def test_wer_hand_computed():
    # 2 deletions of 5 reference words, then 1 substitution of 3: (2 + 1) / 8
    hyp = ["a piano melody", "slow sad song"]
    ref = ["a soft piano melody plays", "slow happy song"]
    assert wer(hyp, ref) == pytest.approx(100 * 3 / 8)
    # unbounded: insertions push it past 100
    assert wer(["a b c d"], ["x"]) > 100


def test_degeneration_stats_of_a_constant_captioner():
    stats = degeneration_stats(["A calm piano piece."] * 8)
    assert stats == {"distinct_ratio": 1 / 8, "vocab_size": 4.0, "mean_length": 4.0}
    varied = degeneration_stats(["rock song", "jazz trio plays"])
    assert varied == {"distinct_ratio": 1.0, "vocab_size": 5.0, "mean_length": 2.5}


def test_missing_wordnet_raises_an_actionable_error(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setenv("NLTK_DATA", str(tmp_path))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(EmbenchError) as err:
        caption_metrics(["a song"], ["a song"])
    message = str(err.value)
    assert "scripts/setup_wordnet.sh" in message
    assert "python -m nltk.downloader wordnet" in message
    assert "NLTK_DATA" in message


@needs_wordnet
def test_meteor_of_identical_strings_is_one_minus_fragmentation_penalty():
    # P = R = 1 so Fmean = 1; one chunk of 4 matches: penalty = 0.5 * (1/4)^3
    assert meteor(["A loud rock song"], ["a loud rock song"]) == pytest.approx(100 * (1 - 0.5 / 64))


@needs_wordnet
def test_meteor_counts_wordnet_synonyms():
    # quick ~ fast through WordNet: 3 matches in 1 chunk -> 1 - 0.5 * (1/3)^3
    assert meteor(["a quick song"], ["a fast song"]) == pytest.approx(100 * (1 - 0.5 / 27))
    # no synonym: 2 of 3 match (Fmean 2/3) in 2 chunks (penalty 0.5) -> 1/3
    assert meteor(["a slow song"], ["a fast song"]) == pytest.approx(100 / 3)


@needs_wordnet
def test_caption_metrics_reports_every_metric():
    hyps = ["a loud rock song with drums", "a loud rock song with drums", "calm piano"]
    refs = ["a loud rock song with heavy drums", "jazz trio with brushed drums", "calm piano"]
    out = caption_metrics(hyps, refs)
    expected_keys = {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "wer"}
    assert expected_keys | {"distinct_ratio", "vocab_size", "mean_length"} == set(out)
    assert all(0.0 <= out[k] <= 100.0 for k in expected_keys - {"wer"})
    assert out["bleu1"] >= out["bleu4"]
    assert out["distinct_ratio"] == pytest.approx(2 / 3)
    assert caption_metrics(refs, refs)["bleu4"] == pytest.approx(100.0)


def test_caption_metrics_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        caption_metrics(["a", "b"], ["a"])


def test_constant_caption_picks_the_best_on_validation():
    train = ["a quiet piano ballad", "a loud rock song with drums", "birds chirping outside"]
    valid = ["a loud rock song with heavy drums", "a rock song with loud drums and bass"]
    assert constant_caption(train, valid) == "a loud rock song with drums"
    assert constant_caption(train, valid, metric="rouge_l") == "a loud rock song with drums"


def test_constant_caption_ties_go_to_the_first_sorted_candidate():
    # neither candidate shares a word with the references: both score 0
    assert constant_caption(["zzz qqq", "yyy ppp"], ["a rock song"], metric="bleu1") == "yyy ppp"


def test_constant_caption_samples_at_most_the_cap_deterministically():
    train = [f"caption number {i:04d}" for i in range(3 * MAX_CONSTANT_CANDIDATES)]
    valid = ["caption number 0000", "caption"]
    first = constant_caption(train, valid, metric="bleu1")
    assert first == constant_caption(list(reversed(train)), valid, metric="bleu1")
    assert first == "caption number 0000"  # the sample keeps the first sorted caption


def test_constant_caption_rejects_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric"):
        constant_caption(["a"], ["a"], metric="cider")


def test_nearest_neighbour_captions_follow_the_closest_training_clip():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    labels = ["rock", "jazz", "piano"]
    train = np.concatenate([c + rng.normal(size=(4, 16)) * 0.1 for c in centres])
    train_caps = [lab for lab in labels for _ in range(4)]
    queries = centres[[2, 0, 1]] + rng.normal(size=(3, 16)) * 0.1
    assert nearest_neighbour_captions(train, train_caps, queries) == ["piano", "rock", "jazz"]


def test_nearest_neighbour_standardises_with_train_statistics():
    # dim 0 has 50x the spread of dim 1. Raw cosine follows dim 0 ("loud"); standardised by
    # the training spread, the query's dim-1 value is the larger deviation ("bright").
    train = np.array([[10.0, 0.0], [0.0, 0.2], [-10.0, 0.0], [0.0, -0.2]])
    caps = ["loud", "bright", "quiet", "dark"]
    query = np.array([[3.0, 0.1]])
    raw = train @ query[0] / np.linalg.norm(train, axis=1)
    assert caps[int(np.argmax(raw))] == "loud"
    assert nearest_neighbour_captions(train, caps, query) == ["bright"]


def test_nearest_neighbour_ties_go_to_the_first_training_clip():
    train = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    assert nearest_neighbour_captions(train, ["a", "b", "c"], np.array([[2.0, 0.0]])) == ["a"]


def test_nearest_neighbour_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="captions"):
        nearest_neighbour_captions(np.zeros((3, 2)), ["a", "b"], np.zeros((1, 2)))
    with pytest.raises(ValueError, match="dimensions"):
        nearest_neighbour_captions(np.zeros((2, 2)), ["a", "b"], np.zeros((1, 3)))


@pytest.mark.parametrize("order", [1, 2, 4])
def test_bleu_from_summed_item_stats_is_sacrebleus_corpus_bleu(order):
    """The paired bootstrap of BLEU recomputes it from resampled clips' counts: the sums must
    give sacrebleu's number exactly, including empty and too-short hypotheses and orders
    without a single match (where the exp smoothing depends on the count)."""
    rng = np.random.default_rng(order)
    words = ["a", "the", "slow", "fast", "guitar", "piano",
             "drums", "male", "female", "vocal", "loud", "soft", "song"]

    def caption(k: int) -> str:
        return " ".join(rng.choice(words, size=k))

    for _ in range(40):
        n = int(rng.integers(1, 30))
        refs = [caption(int(rng.integers(0, 12))) for _ in range(n)]
        hyps = [caption(int(rng.integers(0, rng.choice([2, 3, 12])))) for _ in range(n)]
        stats = np.array(bleu_item_stats(hyps, refs, order))
        assert stats.shape == (n, 2 + 2 * order)
        got = bleu_from_stats(stats.sum(axis=0)[None])[0]
        assert got == pytest.approx(corpus_bleu(hyps, refs, order), abs=1e-9)
    nothing = np.array(bleu_item_stats(["x y"], ["a b c"], order)).sum(axis=0)[None]
    assert bleu_from_stats(nothing)[0] == 0.0
