"""What the whole study costs on one GPU: ``embench run --encoders all --tasks gtzan,musiccaps``,
the exact command, timed per pair (extraction, then the protocol's own training and scoring).

Neither the hub nor YouTube is reachable from the lent GPU machines, so the script makes data
and weights of the real shape first: GTZAN as 30 s, 22.05 kHz 16-bit WAV files in its original
layout under the fault-filtered split's names; MusicCaps as 10 s, 48 kHz FLAC excerpts named by
the shipped metadata's ytids (what ``embench data musiccaps --download`` writes); every encoder
with ``--weights random``; and, for the captioner, a T5 of t5-small's shape (random weights, a
tokenizer trained on the MusicCaps captions, t5-small's vocabulary size) saved to a folder and
passed with ``--captioner``. Scores are meaningless; the time is what is measured.

``--scale`` writes that fraction of each split (every k-th clip), to fit a short GPU session;
the table then also projects the full-size time, assuming every part grows with the clips (an
upper bound: model loads, route timing and other per-run costs are scaled too).

Run: ``python benchmarks/gpu_full_run.py [--scale 0.1] [--seeds 3] [--encoders all]``
(``--quick``: CPU, melspec, a sliver of the data and a tiny T5, to check the script).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

GTZAN_SR, GTZAN_S = 22_050, 30.0
MUSICCAPS_SR, MUSICCAPS_S = 48_000, 10.0
#: t5-small's architecture (its config.json on the hub), for a captioner of the same cost
T5_SMALL = dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6,
                num_heads=8, relative_attention_num_buckets=32, dropout_rate=0.1,
                feed_forward_proj="relu", tie_word_embeddings=True, vocab_size=32_128)
T5_TINY = dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=4,
               vocab_size=512)


def every_kth(items: list, scale: float) -> list:
    """About ``scale`` of ``items``, spread evenly (every k-th, starting with the first)."""
    step = max(1, round(1 / scale))
    return items[::step]


def _signal(name: str, seconds: float, sr: int) -> np.ndarray:
    """A seeded tone plus noise, different per clip: content does not change the cost."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    t = np.arange(int(seconds * sr)) / sr
    pitch = 110.0 * 2 ** rng.uniform(0, 4)
    return (0.3 * np.sin(2 * np.pi * pitch * t) + 0.05 * rng.standard_normal(t.size)
            ).astype(np.float32)


def write_gtzan(data: Path, scale: float, threads: int) -> int:
    """The fault-filtered split's clips (about ``scale`` of each split) as GTZAN's files."""
    import soundfile as sf

    from embench_tasks.gtzan_splits import fault_filtered

    by_split: dict[str, list[tuple[str, str]]] = {}
    for clip_id, (genre, split) in sorted(fault_filtered().items()):
        by_split.setdefault(split, []).append((clip_id, genre))
    chosen = [c for rows in by_split.values() for c in every_kth(rows, scale)]

    def write(item: tuple[str, str]) -> None:
        clip_id, genre = item
        path = data / "gtzan" / "genres" / genre / f"{clip_id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _signal(clip_id, GTZAN_S, GTZAN_SR), GTZAN_SR, subtype="PCM_16")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, chosen))
    return len(chosen)


def musiccaps_rows(data: Path):
    from embench_tasks.musiccaps_layouts import csv_path, read_metadata

    return read_metadata(csv_path(data))


def write_musiccaps(data: Path, scale: float, threads: int) -> int:
    """About ``scale`` of the AudioSet-eval (test) and the other rows as 10 s FLAC excerpts."""
    import soundfile as sf

    rows = musiccaps_rows(data)
    chosen = [r.ytid for flag in (True, False)
              for r in every_kth([r for r in rows if r.is_audioset_eval == flag], scale)]
    folder = data / "musiccaps" / "audio"
    folder.mkdir(parents=True, exist_ok=True)

    def write(ytid: str) -> None:
        sf.write(folder / f"{ytid}.flac", _signal(ytid, MUSICCAPS_S, MUSICCAPS_SR), MUSICCAPS_SR,
                 subtype="PCM_16")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, chosen))
    return len(chosen)


def save_captioner(folder: Path, captions: list[str], shape: dict) -> Path:
    """A random T5 of ``shape`` and a unigram tokenizer trained on ``captions``, saved with
    ``save_pretrained``: what ``--captioner`` loads instead of t5-small's hub files."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<pad>", "</s>", "<unk>"]
    backend.train_from_iterator(captions, trainers.UnigramTrainer(
        vocab_size=min(8_000, shape["vocab_size"]), special_tokens=specials, unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                  unk_token="<unk>")
    config = T5Config(**{**shape, "vocab_size": max(shape["vocab_size"], len(tok))},
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def pair_rows(result: dict, scale: float) -> list[str]:
    """Markdown rows, one per scored pair, then one per failure."""
    rows = []
    for r in result["results"]:
        extract = r.get("extract_s") or 0.0
        total = r.get("duration_s") or 0.0
        main = r["summary"][r["main_score"]]["mean"]
        rows.append(f"| {r['encoder']} | {r['task']} · {r['protocol']} | {extract:,.0f} | "
                    f"{total - extract:,.0f} | {total:,.0f} | {total / scale / 60:,.1f} | "
                    f"{r['main_score']} {main:.2f} |")
    rows += [f"| {f['encoder']} | {f['task']} | FAILED: {f['reason'][:60]} | | | | |"
             for f in result["failures"]]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="all")
    parser.add_argument("--tasks", default="gtzan,musiccaps")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of each split to write (every k-th clip)")
    parser.add_argument("--seeds", default="3")
    parser.add_argument("--quick", action="store_true",
                        help="CPU, melspec, 3%% of the data, a tiny T5: check the script")
    parser.add_argument("--keep", type=Path, default=None,
                        help="a folder for the data, cache and results (default: temporary)")
    args = parser.parse_args()
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    device = "cpu" if args.quick else "cuda"
    if args.quick:
        args.encoders, args.scale, args.seeds = "melspec", 0.03, "1"
    threads = max(1, min(16, os.cpu_count() or 1))

    import torch

    card = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        data = root / "data"
        t0 = time.perf_counter()
        n_gtzan = write_gtzan(data, args.scale, threads)
        n_caps = write_musiccaps(data, args.scale, threads)
        captions = [r.caption for r in musiccaps_rows(data)]
        captioner = save_captioner(root / "t5", captions, T5_TINY if args.quick else T5_SMALL)
        print(f"wrote {n_gtzan} GTZAN and {n_caps} MusicCaps files and a captioner in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        command = [sys.executable, "-m", "embench", "run", "--encoders", args.encoders,
                   "--tasks", args.tasks, "--weights", "random", "--captioner", str(captioner),
                   "--device", device, "--seeds", args.seeds, "--data-dir", str(data),
                   "--cache-dir", str(root / "cache"), "-o", str(root / "results"),
                   "--no-progress"]
        print("$ embench " + " ".join(command[3:]), flush=True)
        start = time.perf_counter()
        with open(root / "run.log", "w") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - start
        for line in (root / "run.log").read_text().splitlines():
            if "embedded" in line or "FAILED" in line or "captioner" in line:
                print(f"  {line}", flush=True)
        results = sorted((root / "results").glob("run-*.json"))
        if not results:
            print((root / "run.log").read_text()[-3000:])
            sys.exit(f"embench run wrote no result file (exit code {done.returncode})")
        result = json.loads(results[-1].read_text())
    print()
    print(f"{card}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}: "
          f"`embench run --encoders {args.encoders} --tasks {args.tasks} --seeds {args.seeds}` "
          f"on {args.scale:g} of the data ({n_gtzan} GTZAN + {n_caps} MusicCaps clips), "
          f"random weights: {wall / 60:.1f} min wall clock, exit code {done.returncode}"
          + (f"; about {wall / args.scale / 60:.0f} min at full size (time ∝ clips)"
             if args.scale < 1 else ""))
    print("| encoder | task · protocol | extraction s | protocol s | pair s | "
          "pair min at full size | score (random weights) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(pair_rows(result, args.scale)))


if __name__ == "__main__":
    main()
