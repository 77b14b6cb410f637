"""Test-set beam search of the frozen captioning protocol on the CPU: a t5-small-shaped captioner
(random weights) decoding MusicCaps-like clips (10 one-second frames of 768 dims) at the
protocol's ``eval_batch_size`` against the training batch it used before (16), in the same
process, with the captions checked equal. Run: ``python -m pytest benchmarks
--benchmark-enable -s``."""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.gpu_full_run import T5_SMALL
from embench.caption_model import AudioCaptioner, WordTokenizer
from embench.captioning import decode, evaluate_captioning

CLIPS, FRAMES, DIM, BEAMS, NEW_TOKENS = 64, 10, 768, 4, 32


def _captioner() -> tuple[AudioCaptioner, WordTokenizer]:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(**{**T5_SMALL, "vocab_size": 8_000}, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)  # a caption-sized vocabulary
    tok = WordTokenizer([])
    tok.decode = lambda ids: " ".join(str(int(i)) for i in ids)  # ids: any vocabulary size
    return AudioCaptioner(T5ForConditionalGeneration(config), 1, DIM).eval(), tok


def test_beam_search_at_the_eval_batch_vs_the_training_batch(benchmark):
    import inspect

    eval_batch = inspect.signature(evaluate_captioning).parameters["eval_batch_size"].default
    train_batch = inspect.signature(evaluate_captioning).parameters["batch_size"].default
    model, tok = _captioner()
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((1, FRAMES, DIM)).astype(np.float32) for _ in range(CLIPS)]
    cpu = torch.device("cpu")
    start = time.perf_counter()
    before = decode(model, tok, feats, train_batch, BEAMS, NEW_TOKENS, cpu)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    after = benchmark.pedantic(decode, args=(model, tok, feats, eval_batch, BEAMS, NEW_TOKENS,
                                             cpu), rounds=1, iterations=1)
    elapsed = time.perf_counter() - start
    assert after == before
    benchmark.extra_info.update(baseline_s=baseline, eval_batch_s=elapsed,
                                speedup=baseline / elapsed)
    print(f"\nbeam search ({BEAMS} beams, {NEW_TOKENS} tokens), {CLIPS} clips, t5-small shape: "
          f"batch {eval_batch} {elapsed:.1f} s, batch {train_batch} {baseline:.1f} s, "
          f"x{baseline / elapsed:.1f}")
