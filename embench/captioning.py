"""The shared frozen captioning protocol: cached frames -> projection -> T5 -> beam search.

Tasks call :func:`evaluate_captioning` so every trained-captioner score comes from one code
path. Selection uses validation only: the layer (``"auto"``: the layer whose nearest-neighbour
caption retrieval scores the best validation main metric - cheap, no training per layer) and
the epoch (lowest validation loss, early stopping). Test is decoded once per seed and scored
with the same metrics as two training-free baselines on the same split: the best constant
caption and nearest-neighbour retrieval, so a captioner that ignores the audio is flagged.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embench import caption_metrics as cm
from embench.caption_model import AudioCaptioner, build_t5, captioner_commit, collate
from embench.errors import EmbenchError
from embench.results import ItemScores
from embench.task import SPLITS, EvalContext, Evaluation

FLAG_NOT_BEATING_CONSTANT = "does-not-beat-constant-caption"
MIX = "mix"
_STD_FLOOR = 1e-6


# ---------------------------------------------------------------- metrics

@functools.cache
def wordnet_note() -> str | None:
    """None when METEOR can be computed; else why not. The shared ``caption_metrics`` refuses to
    run without WordNet, but a trained captioner's BLEU/ROUGE are still worth reporting."""
    try:
        cm.require_wordnet()
    except (EmbenchError, ImportError) as exc:
        return f"METEOR skipped: {exc}"
    return None


def caption_scores(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """:func:`embench.caption_metrics.caption_metrics`, minus METEOR when WordNet is missing
    (same keys for every call in one process, so every seed has the same metrics)."""
    if wordnet_note() is None:
        return cm.caption_metrics(hyps, refs)
    out = {f"bleu{n}": cm.corpus_bleu(hyps, refs, n) for n in range(1, 5)}
    out.update(rouge_l=cm.rouge_l(hyps, refs), wer=cm.wer(hyps, refs))
    out.update(cm.degeneration_stats(hyps))
    return out


def caption_item_scores(main_metric: str, runs: list[tuple[list[str], list[str], list[str]]]
                        ) -> ItemScores | None:
    """The per-clip values behind ``main_metric`` for each seed's (clip ids, hypotheses,
    references) on test, so leaderboards can compare rows paired on clips: BLEU's n-gram
    counts. None for other main metrics, or when the seeds scored different clips."""
    if not re.fullmatch(r"bleu[1-9]", main_metric) or not runs:
        return None
    ids = runs[0][0]
    if any(r[0] != ids for r in runs):
        return None
    order = int(main_metric[4:])
    return ItemScores(metric=main_metric, clip_ids=list(ids), aggregate="bleu",
                      values=[cm.bleu_item_stats(hyps, refs, order) for _, hyps, refs in runs])


def _split_ids(ctx: EvalContext) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Clip ids and reference captions per split, for clips with cached features."""
    features = ctx.features
    if features is None:
        raise EmbenchError("The captioning protocol needs cached features, but none were given.")
    available = set(features.clip_ids) - set(features.skipped)
    ids = {s: [c.id for c in ctx.clips.split(s) if c.id in available] for s in SPLITS}
    refs = {s: [str(c.target) for c in ctx.clips.split(s) if c.id in available] for s in SPLITS}
    for split in SPLITS:
        if not ids[split]:
            raise EmbenchError(f"{ctx.clips.dataset_id}: no {split} clip has cached features; "
                               f"captioning needs train, valid and test clips.")
    return ids, refs


def _nn_proxy(ctx: EvalContext, ids: dict[str, list[str]], refs: dict[str, list[str]],
              metric: str) -> list[float]:
    """Validation ``metric`` of nearest-neighbour retrieval per layer: the layer proxy."""
    f = ctx.features
    curve = []
    for layer in range(f.num_layers):
        hyps = cm.nearest_neighbour_captions(f.clip_means(layer, ids["train"]), refs["train"],
                                             f.clip_means(layer, ids["valid"]))
        curve.append(caption_scores(hyps, refs["valid"])[metric])
    return curve


def _stacked_frames(ctx: EvalContext, ids: dict[str, list[str]], layers: list[int]
                    ) -> dict[str, list[np.ndarray]]:
    """Per split, one ``[L, F, D]`` array per clip, each layer standardised with the mean and
    std of all *training* frames (AdamW on raw activations of very different scales is slow)."""
    per_layer = {s: [ctx.features.frames(layer, ids[s]) for layer in layers] for s in SPLITS}
    for li in range(len(layers)):
        train = np.concatenate(per_layer["train"][li])
        mean, std = train.mean(axis=0), np.maximum(train.std(axis=0), _STD_FLOOR)
        for s in SPLITS:
            per_layer[s][li] = [((a - mean) / std).astype(np.float32) for a in per_layer[s][li]]
    return {s: [np.stack([per_layer[s][li][c] for li in range(len(layers))])
                for c in range(len(ids[s]))] for s in SPLITS}


# ---------------------------------------------------------------- training and decoding

@contextmanager
def _threads(device: torch.device) -> Iterator[None]:
    """One CPU thread: the model is small, so more threads mostly add scheduling noise, and
    float sums then do not depend on the core count (as in :mod:`embench.probes`)."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _autocast(device: torch.device):
    """bf16 on CUDA (T5 overflows in fp16), plain fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _batches(n: int, size: int, gen: torch.Generator | None) -> list[list[int]]:
    order = torch.randperm(n, generator=gen).tolist() if gen is not None else list(range(n))
    return [order[i: i + size] for i in range(0, n, size)]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def _valid_loss(model: AudioCaptioner, feats: list[np.ndarray], labels: list[list[int]],
                batch_size: int, device: torch.device) -> float:
    """Token-weighted mean cross-entropy over the whole validation split."""
    model.eval()
    total, tokens = 0.0, 0
    for idx in _batches(len(feats), batch_size, None):
        batch = _to(collate([feats[i] for i in idx], [labels[i] for i in idx]), device)
        with _autocast(device):
            loss = model(**batch)
        n = int((batch["labels"] != -100).sum())
        total, tokens = total + float(loss) * n, tokens + n
    return total / max(tokens, 1)


def train_captioner(model: AudioCaptioner, train: tuple[list[np.ndarray], list[list[int]]],
                    valid: tuple[list[np.ndarray], list[list[int]]], seed: int, epochs: int,
                    lr: float, batch_size: int, patience: int, device: torch.device,
                    eval_batch_size: int | None = None) -> dict[str, Any]:
    """AdamW with linear warmup (first 10% of steps, at least one epoch's worth capped by the
    total) then linear decay; keeps the weights of the lowest validation loss in memory and
    stops after ``patience`` epochs without improvement. Returns the curve and best epoch."""
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train[0]) / batch_size)
    total = steps_per_epoch * epochs
    warmup = max(1, min(total // 10, steps_per_epoch * 2))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(total - warmup, 1))))
    best_loss, best_epoch, best_state, curve = math.inf, 0, None, []
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in _batches(len(train[0]), batch_size, gen):
            batch = _to(collate([train[0][i] for i in idx], [train[1][i] for i in idx]), device)
            with _autocast(device):
                loss = model(**batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        vloss = _valid_loss(model, valid[0], valid[1], eval_batch_size or batch_size, device)
        curve.append(vloss)
        if vloss < best_loss:
            best_loss, best_epoch = vloss, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    return {"epoch": best_epoch, "valid_loss": best_loss, "valid_loss_curve": curve,
            "epochs_run": len(curve)}


@torch.no_grad()
def decode(model: AudioCaptioner, tok: Any, feats: list[np.ndarray], batch_size: int,
           num_beams: int, max_new_tokens: int, device: torch.device) -> list[str]:
    model.eval()
    out: list[str] = []
    for idx in _batches(len(feats), batch_size, None):
        batch = _to(collate([feats[i] for i in idx]), device)
        with _autocast(device):
            ids = model.generate(batch["feats"], batch["attention_mask"], num_beams,
                                 max_new_tokens)
        out.extend(tok.decode(row.tolist()) for row in ids)
    return out


def _write_jsonl(path: Path, ids: list[str], refs: list[str], hyps: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for cid, ref, hyp in zip(ids, refs, hyps, strict=True):
            fh.write(json.dumps({"clip_id": cid, "reference": ref, "hypothesis": hyp},
                                ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- protocol

def evaluate_captioning(
    ctx: EvalContext,
    captioner: str = "t5-small",
    layer: int | str = "auto",
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    num_beams: int = 4,
    patience: int = 4,
    main_metric: str = "bleu4",
    eval_batch_size: int = 64,
) -> Evaluation:
    """Train a captioner on ``ctx.features`` once per seed and score its test captions.

    ``captioner``: ``"scratch"`` (small T5, word tokenizer from training captions), a local
    ``save_pretrained`` folder, or a hub id such as ``"t5-small"`` (local cache only): the
    task's default; ``ctx.captioner`` (the user's ``--captioner``) takes precedence.
    ``layer``: an index, ``"auto"`` (best validation nearest-neighbour ``main_metric``, ties to
    the lowest layer) or ``"mix"`` (learned softmax mix of all layers; needs equal widths).
    ``eval_batch_size``: clips per batch for the validation loss and beam search, which do
    not train, so batching does not change what they compute (padding is masked); larger
    batches cut the per-token launches of generation.
    Writes ``captions-seed<k>.jsonl`` (clip_id, reference, hypothesis) per seed to
    ``ctx.output_dir``. Scores are every numeric key of the caption metrics, per seed.
    """
    if not ctx.seeds:
        raise EmbenchError("evaluate_captioning needs at least one seed.")
    captioner = ctx.captioner or captioner
    ids, refs = _split_ids(ctx)
    features = ctx.features
    curve = _nn_proxy(ctx, ids, refs, main_metric)
    proxy_layer = int(np.argmax(curve))
    if layer == MIX:
        if not features.same_width:
            raise EmbenchError(f"layer='mix' needs layers of equal width, got {features.dims}")
        layers = list(range(features.num_layers))
    elif layer == "auto":
        layers = [proxy_layer]
    elif isinstance(layer, int) and 0 <= layer < features.num_layers:
        layers = [layer]
    else:
        raise EmbenchError(f"layer must be 0..{features.num_layers - 1}, 'auto' or 'mix', "
                           f"not {layer!r}")
    nn_layer = layers[0] if len(layers) == 1 else proxy_layer
    frames = _stacked_frames(ctx, ids, layers)
    device = torch.device(ctx.device)

    per_seed: list[dict[str, Any]] = []
    scores: dict[str, list[float]] = {}
    tested: list[tuple[list[str], list[str], list[str]]] = []  # ids, hypotheses, references
    with _threads(device):
        for seed in ctx.seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                t5, tok = build_t5(captioner, refs["train"], seed)
                model = AudioCaptioner(t5, len(layers), frames["train"][0].shape[2]).to(device)
                labels = {s: [tok.encode(r) for r in refs[s]] for s in ("train", "valid")}
                if max(map(len, labels["train"])) > max_new_tokens:
                    ctx.log(f"captioning: training captions reach {max(map(len, labels['train']))}"
                            f" tokens but max_new_tokens={max_new_tokens}; long captions will be "
                            f"cut off at test time")
                fit = train_captioner(model, (frames["train"], labels["train"]),
                                      (frames["valid"], labels["valid"]), seed, epochs, lr,
                                      batch_size, patience, device, eval_batch_size)
            hyps = decode(model, tok, frames["test"], eval_batch_size, num_beams, max_new_tokens,
                          device)  # test: once per seed, after selection
            metrics = caption_scores(hyps, refs["test"])
            for key, value in metrics.items():
                scores.setdefault(key, []).append(value)
            tested.append((ids["test"], hyps, refs["test"]))
            _write_jsonl(Path(ctx.output_dir) / f"captions-seed{seed}.jsonl", ids["test"],
                         refs["test"], hyps)
            longest = max(len(s) for s in labels["train"])
            fit.update(seed=seed, longest_train_caption_tokens=longest,
                       layer_weights=torch.softmax(model.mix.detach().float(), 0).tolist())
            per_seed.append(fit)
            ctx.log(f"captioner {captioner} seed {seed}: epoch {fit['epoch']}, valid loss "
                    f"{fit['valid_loss']:.3f}, test {main_metric} {metrics[main_metric]:.2f}")
    if {len(v) for v in scores.values()} != {len(ctx.seeds)}:
        raise EmbenchError("caption metrics returned different keys for different seeds")

    const = cm.constant_caption(refs["train"], refs["valid"], main_metric)
    const_metrics = caption_scores([const] * len(refs["test"]), refs["test"])
    nn_caps = cm.nearest_neighbour_captions(features.clip_means(nn_layer, ids["train"]),
                                            refs["train"],
                                            features.clip_means(nn_layer, ids["test"]))
    nn_metrics = caption_scores(nn_caps, refs["test"])
    baselines = {"constant-caption": const_metrics[main_metric],
                 "nearest-neighbour": nn_metrics[main_metric]}
    flags = ([] if float(np.mean(scores[main_metric])) > baselines["constant-caption"]
             else [FLAG_NOT_BEATING_CONSTANT])
    details: dict[str, Any] = {
        "captioner": captioner,
        "captioner_revision": captioner_commit(captioner),
        "main_metric": main_metric,
        "layer": MIX if len(layers) > 1 else layers[0],
        "layer_selection": "nearest-neighbour caption " + main_metric + " on validation"
        if layer == "auto" else f"given ({layer})",
        "valid_nn_proxy_by_layer": curve,
        "n_clips": {s: len(ids[s]) for s in SPLITS},
        "hparams": {"epochs": epochs, "lr": lr, "batch_size": batch_size, "patience": patience,
                    "num_beams": num_beams, "max_new_tokens": max_new_tokens,
                    "eval_batch_size": eval_batch_size},
        "seeds": per_seed,
        "constant_caption": const,
        "bleu_signature": cm.bleu_signature(),
        "baseline_metrics": {"constant-caption": const_metrics,
                             "nearest-neighbour": {**nn_metrics, "layer": nn_layer}},
    }
    if wordnet_note() is not None:
        details["meteor"] = wordnet_note()
    return Evaluation(scores=scores, baselines=baselines, details=details, flags=flags,
                      item_scores=caption_item_scores(main_metric, tested))
