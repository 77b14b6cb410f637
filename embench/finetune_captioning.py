"""The ``finetune`` protocol for captioning: the encoder is trained end to end together with the
frozen protocol's captioner (projection + T5, :mod:`embench.caption_model`).

Design decisions, and why:

- **Model**: the encoder's hidden states (a learned softmax mix of all layers when they share a
  width, else the last layer) feed :class:`~embench.caption_model.AudioCaptioner` unchanged, so
  the only difference to ``frozen`` is that the encoder learns. No per-layer standardisation
  (the frozen protocol's train-set statistics would go stale as the encoder changes); the
  captioner's LayerNorm after the projection sets the scale instead.
- **Data**: as in :mod:`embench.finetune`: decoded on the fly; training sees one seeded random
  ``crop_s`` crop per clip per epoch (batch cut to its shortest item, never padded);
  evaluation cuts the whole clip into ``crop_s`` windows and **concatenates their frames in
  time**, so the captioner hears the whole clip. Clips that fail to decode are skipped and
  listed.
- **Optimiser**: AdamW, encoder at ``lr_encoder``, captioner at ``lr_head``; warmup + cosine;
  gradient norm clipped at 1; bf16 autocast on CUDA; gradient checkpointing where supported.
- **Selection**: lowest token-weighted validation loss; the best epoch's weights are kept as a
  CPU copy; ``patience`` epochs without improvement stop training; test is decoded once per
  seed. Each seed reloads the encoder's weights; the encoder is unloaded at the end.
- **Baselines**: the best constant caption (as :mod:`embench.captioning`); the
  nearest-neighbour baseline is omitted, since it needs cached frozen features.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from embench import caption_metrics as cm
from embench.caption_model import IGNORE_INDEX, AudioCaptioner, build_t5, captioner_commit
from embench.captioning import (
    FLAG_NOT_BEATING_CONSTANT,
    _write_jsonl,
    caption_item_scores,
    caption_scores,
    wordnet_note,
)
from embench.encoder import Encoder
from embench.errors import EmbenchError
from embench.extract import _as_layers
from embench.finetune import MAX_GRAD_NORM, ClipAudioRun, _warmup_cosine
from embench.precision import default_for
from embench.task import SPLITS, Clip, EvalContext, Evaluation
from embench.windowing import plan_windows

__all__ = ["finetune_captioning"]


class _Model(nn.Module):
    """Encoder (registered as ``backbone``) -> selected hidden states -> AudioCaptioner."""

    def __init__(self, encoder: Encoder, backbone: nn.Module, t5: nn.Module) -> None:
        super().__init__()
        self.encoder, self.backbone = encoder, backbone
        dims = [encoder.info.layer_dim(i) for i in range(encoder.info.num_layers)]
        self.layers = list(range(len(dims))) if len(set(dims)) == 1 else [len(dims) - 1]
        self.captioner = AudioCaptioner(t5, len(self.layers), dims[-1])

    def frames(self, waves: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` audio -> ``[B, L, F, D]`` fp32 hidden states of the selected layers."""
        layers = _as_layers(self.encoder.forward(waves), self.encoder, len(waves))
        return torch.stack([layers[i].float() for i in self.layers], 1)


def _no_weights(encoder: Encoder) -> EmbenchError:
    return EmbenchError(f"Encoder {encoder.name!r} has no trainable weights, so the 'finetune' "
                        f"captioning protocol cannot train it; use --protocol frozen.")


def _labels(tok: Any, captions: list[str]) -> torch.Tensor:
    ids = [tok.encode(c) for c in captions]
    y = torch.full((len(ids), max(map(len, ids))), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(ids):
        y[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return y


class _Run(ClipAudioRun):
    def __init__(self, ctx: EvalContext, clips: dict[str, list[Clip]], hp: dict[str, Any]):
        self.ctx, self.clips, self.hparams, self.num_workers = ctx, clips, hp, 0
        self.device, self.encoder = torch.device(ctx.device), ctx.encoder
        self.skipped: dict[str, str] = {}

    def clip_frames(self, model: _Model, split: str):
        """Yields batches ``(indices, [B, L, F, D] frames, attention mask)`` of whole clips
        (windows concatenated in time), eval mode, no gradients."""
        model.eval()
        sr, size = self.encoder.info.sample_rate, self.hparams["batch_size"]
        pending: list[tuple[int, torch.Tensor]] = []

        def flush():
            longest = max(f.shape[1] for _, f in pending)
            x = torch.zeros(len(pending), *pending[0][1].shape[:1], longest,
                            pending[0][1].shape[2], device=self.device)
            mask = torch.zeros(len(pending), longest, dtype=torch.long, device=self.device)
            for i, (_, f) in enumerate(pending):
                x[i, :, : f.shape[1]], mask[i, : f.shape[1]] = f, 1
            return [i for i, _ in pending], x, mask

        with torch.no_grad(), self.autocast():
            for item in self.loader(split):
                if not self.usable(split, [item]):
                    continue
                wave = item.audio.to(self.device)
                windows = plan_windows(len(wave), sr, self.hparams["crop_s"], None)
                parts = [model.frames(torch.stack([wave[w.start:w.end]
                                                   for w in windows[b:b + size]]))
                         for b in range(0, len(windows), size)]
                stacked = torch.cat(parts)  # [W, L, F, D] -> [L, W*F, D]
                pending.append((item.index, stacked.permute(1, 0, 2, 3).flatten(1, 2)))
                if len(pending) == size:
                    yield flush()
                    pending = []
            if pending:
                yield flush()

    def valid_loss(self, model: _Model, tok: Any) -> float:
        total, tokens = 0.0, 0
        for idx, x, mask in self.clip_frames(model, "valid"):
            y = _labels(tok, [str(self.clips["valid"][i].target) for i in idx]).to(self.device)
            with torch.no_grad(), self.autocast():
                loss = model.captioner(x, mask, y)
            n = int((y != IGNORE_INDEX).sum())
            total, tokens = total + float(loss) * n, tokens + n
        if tokens == 0:
            raise EmbenchError(f"{self.ctx.clips.dataset_id}: no valid clip could be decoded")
        return total / tokens

    def decode(self, model: _Model, tok: Any, split: str) -> tuple[list[int], list[str]]:
        indices, hyps = [], []
        for idx, x, mask in self.clip_frames(model, split):
            with self.autocast():
                ids = model.captioner.generate(x, mask, self.hparams["num_beams"],
                                               self.hparams["max_new_tokens"])
            indices.extend(idx)
            hyps.extend(tok.decode(row.tolist()) for row in ids)
        if not indices:
            raise EmbenchError(f"{self.ctx.clips.dataset_id}: no {split} clip could be decoded")
        return indices, hyps


def _train(run: _Run, seed: int, train_refs: list[str]) -> tuple[_Model, Any, dict[str, Any]]:
    start, hp, enc = time.perf_counter(), run.hparams, run.encoder
    enc.unload()
    enc.load(run.device, run.ctx.weights, run.ctx.weights_path)
    module = enc.trainable_module()
    if module is None or not any(True for _ in module.parameters()):
        raise _no_weights(enc)
    if hp["gradient_checkpointing"] and getattr(enc, "supports_gradient_checkpointing", False):
        enc.set_gradient_checkpointing(True)
    module.requires_grad_(True)
    t5, tok = build_t5(hp["captioner"], train_refs, seed)
    model = _Model(enc, module, t5).to(run.device)
    optimiser = torch.optim.AdamW(
        [{"params": list(module.parameters()), "lr": hp["lr_encoder"]},
         {"params": list(model.captioner.parameters()), "lr": hp["lr_head"]}], weight_decay=0.01)
    total = hp["epochs"] * math.ceil(len(run.clips["train"]) / hp["batch_size"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, partial(_warmup_cosine, total=total))
    train_loader = run.loader("train", seed)
    best_loss, best_epoch, state, curve = math.inf, 0, None, []
    for epoch in range(1, hp["epochs"] + 1):
        model.train()
        loss_sum, n_seen = 0.0, 0
        for items in train_loader:
            ok = run.usable("train", items)
            if not ok:
                continue
            length = min(len(it.audio) for it in ok)
            waves = torch.stack([it.audio[:length] for it in ok]).to(run.device)
            y = _labels(tok, [str(run.clips["train"][it.index].target) for it in ok])
            with run.autocast():
                x = model.frames(waves)
                mask = torch.ones(x.shape[0], x.shape[2], dtype=torch.long, device=run.device)
                loss = model.captioner(x, mask, y.to(run.device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimiser.step()
            schedule.step()
            loss_sum, n_seen = loss_sum + float(loss.detach()) * len(ok), n_seen + len(ok)
        if n_seen == 0:
            raise EmbenchError(f"{run.ctx.clips.dataset_id}: no train clip could be decoded")
        vloss = run.valid_loss(model, tok)
        curve.append({"epoch": epoch, "train_loss": loss_sum / n_seen, "valid_loss": vloss})
        improved = vloss < best_loss
        if improved:
            best_loss, best_epoch = vloss, epoch
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        run.ctx.log(f"finetune captioning seed {seed} epoch {epoch}/{hp['epochs']}: train loss "
                    f"{loss_sum / n_seen:.4f}, valid loss {vloss:.4f}"
                    f"{' (best)' if improved else ''}")
        if epoch - best_epoch >= hp["patience"]:
            break
    model.load_state_dict(state)
    details = {"seed": seed, "best_epoch": best_epoch, "valid_loss": best_loss,
               "epochs_run": len(curve), "curve": curve,
               "layer_weights": torch.softmax(model.captioner.mix.detach().float(), 0).tolist(),
               "seconds": round(time.perf_counter() - start, 3)}
    return model, tok, details


def finetune_captioning(
    ctx: EvalContext, captioner: str = "t5-small", epochs: int = 10, lr_encoder: float = 1e-5,
    lr_head: float = 1e-3, batch_size: int = 4, patience: int = 3, num_beams: int = 4,
    max_new_tokens: int = 64, main_metric: str = "bleu4", crop_s: float | None = None,
    gradient_checkpointing: bool = True,
) -> Evaluation:
    """Fine-tune ``ctx.encoder`` with a T5 captioner once per seed; score test captions.

    ``captioner`` as in :func:`embench.captioning.evaluate_captioning` (``ctx.captioner``, the
    user's ``--captioner``, takes precedence). ``crop_s``: training
    crop and evaluation window (default: the encoder's ``window_s``; None: whole clips). Writes
    ``captions-seed<k>.jsonl`` per seed to ``ctx.output_dir``. Raises :class:`EmbenchError` for
    a weight-free encoder (use ``--protocol frozen``) or an empty split.
    """
    if ctx.encoder is None or not ctx.seeds:
        raise EmbenchError("finetune_captioning needs ctx.encoder and at least one seed.")
    encoder = ctx.encoder
    if type(encoder).trainable_module is Encoder.trainable_module:
        raise _no_weights(encoder)  # before loading anything
    clips = {s: ctx.clips.split(s) for s in SPLITS}
    for split, members in clips.items():
        if not members:
            raise EmbenchError(f"{ctx.clips.dataset_id}: split {split!r} is empty; fine-tuning "
                               f"needs train, valid and test clips.")
    window_s = crop_s if crop_s is not None else encoder.info.window_s
    device = torch.device(ctx.device)
    captioner = ctx.captioner or captioner
    hp = dict(captioner=captioner, epochs=epochs, lr_encoder=lr_encoder, lr_head=lr_head,
              batch_size=batch_size, patience=patience, num_beams=num_beams,
              max_new_tokens=max_new_tokens, crop_s=window_s,
              gradient_checkpointing=gradient_checkpointing, schedule="linear warmup, cosine",
              eval_windows="all windows concatenated in time", compute_dtype=default_for(device))
    run = _Run(ctx, clips, hp)
    train_refs = [str(c.target) for c in clips["train"]]
    per_seed, scores, numpy_state = [], {}, np.random.get_state()
    test_ids, test_refs, tested = [], [], []
    try:
        for seed in ctx.seeds:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                np.random.seed(seed)
                model, tok, details = _train(run, seed, train_refs)
                indices, hyps = run.decode(model, tok, "test")  # once per seed, after selection
            test_ids = [clips["test"][i].id for i in indices]
            test_refs = [str(clips["test"][i].target) for i in indices]
            metrics = caption_scores(hyps, test_refs)
            for key, value in metrics.items():
                scores.setdefault(key, []).append(value)
            tested.append((test_ids, hyps, test_refs))
            _write_jsonl(Path(ctx.output_dir) / f"captions-seed{seed}.jsonl", test_ids,
                         test_refs, hyps)
            per_seed.append(details)
            ctx.log(f"finetune captioner {captioner} seed {seed}: epoch {details['best_epoch']}"
                    f", test {main_metric} {metrics[main_metric]:.2f}")
    finally:
        np.random.set_state(numpy_state)
        encoder.unload()  # fine-tuned weights must never serve a later frozen task
    ok = {s: [str(c.target) for c in m if c.id not in run.skipped] for s, m in clips.items()}
    const = cm.constant_caption(ok["train"], ok["valid"], main_metric)
    const_metrics = caption_scores([const] * len(test_refs), test_refs)
    baselines = {"constant-caption": const_metrics[main_metric]}
    flags = ([] if float(np.mean(scores[main_metric])) > baselines["constant-caption"]
             else [FLAG_NOT_BEATING_CONSTANT])
    details_out: dict[str, Any] = {
        "protocol": "finetune", "captioner": captioner,
        "captioner_revision": captioner_commit(captioner), "main_metric": main_metric,
        "n_clips": {s: len(v) for s, v in ok.items()}, "hyperparameters": hp, "seeds": per_seed,
        "constant_caption": const, "bleu_signature": cm.bleu_signature(),
        "baseline_metrics": {"constant-caption": const_metrics},
        "nearest-neighbour": "omitted: it needs cached frozen features",
        "skipped": [{"clip_id": c, "reason": r} for c, r in sorted(run.skipped.items())],
    }
    if wordnet_note() is not None:
        details_out["meteor"] = wordnet_note()
    return Evaluation(scores=scores, baselines=baselines, details=details_out, flags=flags,
                      skipped=dict(sorted(run.skipped.items())),
                      item_scores=caption_item_scores(main_metric, tested))
