"""The ``finetune`` protocol for single-label classification: the encoder is trained end to end
with a small head, the stopping epoch chosen on validation. Tasks call
:func:`finetune_classification` from ``Task.evaluate`` (a protocol without cached features, so
``ctx.encoder`` is set); its Evaluation has the frozen probe's shape (:mod:`embench.classification`,
percent), so both share one table.

Design decisions, and why:

- **Head**: a softmax layer mix (the last layer if widths differ), time mean, dropout, linear.
- **Optimiser**: AdamW, the encoder at a far lower learning rate than the fresh head (adapt the
  pretrained features, do not overwrite them); linear warmup over the first 10% of the
  ``epochs`` budget, then cosine decay to zero (planned for ``epochs`` even if training stops
  early); gradient norm clipped at 1. The model's own train-mode regularisers (dropout, HF
  SpecAugment masking) stay on, as in its published fine-tuning recipes.
- **Precision**: fp32 weights, bf16 autocast on CUDA (never fp16), gradient checkpointing.
- **Data**: decoded on the fly in a DataLoader, so memory stays bounded. Training sees one
  random ``crop_s`` crop per clip per epoch (a batch is cut to its shortest item, never zero
  padded: group-norm encoders change under padding); evaluation cuts the whole clip into equal
  windows with :func:`~embench.windowing.plan_windows` and averages their logits. Order and crop
  offsets are drawn in the main process, so ``num_workers`` cannot change results. Clips that
  fail to decode or are too short are skipped and listed.
- **Selection**: validation accuracy after every epoch (ties: lower validation loss); the best
  epoch's weights are kept as a CPU copy; ``patience`` epochs without improvement stop
  training; test is evaluated once per seed, with the selected weights.
- **Independent seeds**: each seed reloads the weights and seeds torch and numpy (restored
  afterwards); the encoder is unloaded at the end, so no later task embeds fine-tuned weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embench.audio import load_audio
from embench.classification import (
    _confusion,
    _label_names,
    _macro_f1,
    _percent,
    classification_baselines,
)
from embench.devices import default_num_workers
from embench.encoder import Encoder
from embench.errors import AudioDecodeError, EmbenchError
from embench.extract import _as_layers
from embench.precision import default_for
from embench.results import ItemScores
from embench.stats import bootstrap_ci
from embench.task import SPLITS, Clip, EvalContext, Evaluation
from embench.windowing import plan_windows

WARMUP_FRACTION = 0.1
HEAD_DROPOUT = 0.1
MAX_GRAD_NORM = 1.0
N_BOOTSTRAP = 1000


class _Item(NamedTuple):  # a NamedTuple, so that DataLoader's pin_memory reaches the tensor
    index: int
    audio: torch.Tensor | None
    error: str | None


@dataclass
class _ClipAudio(torch.utils.data.Dataset):
    """Decodes one clip per item; failures travel back as data, never as crashes. The key
    ``(index, crop_seed)`` asks for a random ``crop``-sample crop, a plain index for the clip."""

    clips: list[Clip]
    sample_rate: int
    min_samples: int
    crop: int | None

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> _Item:
        index, crop_seed = key if isinstance(key, tuple) else (key, None)
        clip = self.clips[index]
        try:
            audio = load_audio(clip.source, self.sample_rate, clip.start_s, clip.end_s,
                               name=clip.describe_source())
        except AudioDecodeError as exc:
            return _Item(index, None, exc.reason)
        if len(audio) < self.min_samples:
            return _Item(index, None, f"too short: {len(audio)} samples < {self.min_samples}")
        if crop_seed is not None and self.crop is not None and len(audio) > self.crop:
            start = int(np.random.default_rng(crop_seed).integers(0, len(audio) - self.crop + 1))
            audio = audio[start:start + self.crop]
        return _Item(index, torch.from_numpy(np.ascontiguousarray(audio)), None)


class _EpochSampler(torch.utils.data.Sampler):
    """A fresh order and fresh crop seeds every epoch, from one generator in the main process."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.gen = n, torch.Generator().manual_seed(seed)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.gen).tolist()
        crops = torch.randint(0, 2**31 - 1, (self.n,), generator=self.gen).tolist()
        return iter(list(zip(order, crops, strict=True)))


class _Classifier(nn.Module):
    """The encoder, then softmax-weighted sum over layers -> mean over time -> dropout ->
    linear. The encoder's trainable module is registered as ``backbone``, so that ``train()``,
    ``eval()`` and ``state_dict()`` cover encoder and head together."""

    def __init__(self, encoder: Encoder, backbone: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.encoder, self.backbone = encoder, backbone  # encoder.forward runs the backbone
        info = encoder.info
        dims = [info.layer_dim(i) for i in range(info.num_layers)]
        self.layers = list(range(len(dims))) if len(set(dims)) == 1 else [len(dims) - 1]
        self.layer_logits = nn.Parameter(torch.zeros(len(self.layers)))
        self.dropout = nn.Dropout(HEAD_DROPOUT)
        self.linear = nn.Linear(dims[-1], n_classes)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` audio -> ``[B, n_classes]`` fp32 logits, through the encoder."""
        layers = _as_layers(self.encoder.forward(waveforms), self.encoder, len(waveforms))
        pooled = torch.stack([layers[i].float().mean(1) for i in self.layers], 1)  # [B, L, D]
        mixed = (pooled * torch.softmax(self.layer_logits, 0)[:, None]).sum(1)
        return self.linear(self.dropout(mixed)).float()


def _warmup_cosine(step: int, total: int) -> float:
    """Learning-rate factor: linear warmup, then cosine decay to zero at step ``total``."""
    warmup = max(1, round(WARMUP_FRACTION * total))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class ClipAudioRun:
    """Clip decoding shared by the protocols that train the encoder (classification and
    captioning). Needs ``encoder clips device skipped num_workers hparams`` attributes."""

    def autocast(self) -> torch.autocast:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def loader(self, split: str, seed: int | None = None) -> torch.utils.data.DataLoader:
        """Train: seeded lists of ``batch_size`` random crops; else one whole clip per item."""
        info, crop_s = self.encoder.info, self.hparams["crop_s"]
        crop = None if crop_s is None else int(round(crop_s * info.sample_rate))
        data = _ClipAudio(self.clips[split], info.sample_rate, info.min_samples, crop)
        train = seed is not None
        return torch.utils.data.DataLoader(
            data, batch_size=self.hparams["batch_size"] if train else None,
            sampler=_EpochSampler(len(data), seed) if train else None,
            collate_fn=list if train else None, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, pin_memory=self.device.type == "cuda")

    def usable(self, split: str, items: Sequence[_Item]) -> list[_Item]:
        """Record failed items as skipped; return the rest."""
        for item in items:
            if item.error is not None:
                self.skipped.setdefault(self.clips[split][item.index].id, item.error)
        return [item for item in items if item.error is None]


@dataclass
class _Run(ClipAudioRun):
    """What every seed shares: the encoder, the splits, the settings and the skipped clips."""

    ctx: EvalContext
    device: torch.device
    encoder: Encoder
    clips: dict[str, list[Clip]]
    y: dict[str, np.ndarray]
    n_classes: int
    hparams: dict[str, Any]
    num_workers: int
    skipped: dict[str, str] = field(default_factory=dict)

    def nothing_decoded(self, split: str) -> EmbenchError:
        return EmbenchError(f"{self.ctx.clips.dataset_id}: no {split!r} clip could be decoded; "
                            f"first reasons: {list(self.skipped.items())[:3]}")

    def predict(self, model: _Classifier, split: str, loader: Any
                ) -> tuple[np.ndarray, torch.Tensor, list[str]]:
        """Targets, clip logits (eval mode, mean over windows) and ids of the decodable clips."""
        model.eval()
        sr, size = self.encoder.info.sample_rate, self.hparams["batch_size"]
        indices, rows = [], []
        with torch.no_grad(), self.autocast():
            for item in loader:
                if not self.usable(split, [item]):
                    continue
                wave = item.audio.to(self.device, non_blocking=True)
                windows = plan_windows(len(wave), sr, self.hparams["crop_s"], None)
                logits = [model(torch.stack([wave[w.start:w.end] for w in windows[b:b + size]]))
                          for b in range(0, len(windows), size)]
                rows.append(torch.cat(logits).mean(0).cpu())
                indices.append(item.index)
        if not rows:
            raise self.nothing_decoded(split)
        return (self.y[split][indices], torch.stack(rows),
                [self.clips[split][i].id for i in indices])


@dataclass
class _SeedResult:
    details: dict[str, Any]  # best epoch, validation curve, layer weights, seconds
    test_true: np.ndarray
    test_pred: np.ndarray
    train_accuracy: float
    test_ids: list[str]


def _train(run: _Run, seed: int) -> _SeedResult:
    """Train from freshly loaded weights; score the best-validation epoch's model."""
    start, hp, enc = time.perf_counter(), run.hparams, run.encoder
    enc.unload()  # a no-op unless an earlier seed or task loaded it
    enc.load(run.device, run.ctx.weights, run.ctx.weights_path)
    module = _trainable(enc)
    if hp["gradient_checkpointing"] and getattr(enc, "supports_gradient_checkpointing", False):
        enc.set_gradient_checkpointing(True)
    module.requires_grad_(True)
    model = _Classifier(enc, module, run.n_classes).to(run.device)
    head = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    optimiser = torch.optim.AdamW([{"params": list(module.parameters()), "lr": hp["lr_encoder"]},
                                   {"params": head, "lr": hp["lr_head"]}],
                                  weight_decay=hp["weight_decay"])
    total = hp["epochs"] * math.ceil(len(run.clips["train"]) / hp["batch_size"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, partial(_warmup_cosine, total=total))
    train_loader, valid_loader = run.loader("train", seed), run.loader("valid")
    best, best_epoch, state, curve = (-1.0, -math.inf), 0, None, []
    for epoch in range(1, hp["epochs"] + 1):
        t0 = time.perf_counter()
        train_loss = _epoch(run, model, optimiser, schedule, train_loader)
        y_valid, logits, _ = run.predict(model, "valid", valid_loader)
        accuracy = _percent(y_valid, logits.argmax(1).numpy())
        valid_loss = float(F.cross_entropy(logits, torch.from_numpy(y_valid)))
        curve.append({"epoch": epoch, "train_loss": train_loss, "valid_accuracy": accuracy,
                      "valid_loss": valid_loss})
        improved = state is None or (accuracy, -valid_loss) > best
        if improved:  # weights to CPU: only the best epoch's copy is ever held
            best, best_epoch = (accuracy, -valid_loss), epoch
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        run.ctx.log(f"finetune seed {seed} epoch {epoch}/{hp['epochs']}: train loss "
                    f"{train_loss:.4f}, valid accuracy {accuracy:.1f}% loss {valid_loss:.4f}"
                    f"{' (best)' if improved else ''} [{time.perf_counter() - t0:.1f}s]")
        if epoch - best_epoch >= hp["patience"]:
            break
    model.load_state_dict(state)
    test_true, logits, test_ids = run.predict(model, "test", run.loader("test"))
    train_true, train_logits, _ = run.predict(model, "train", run.loader("train"))
    layer_weights = torch.softmax(model.layer_logits.detach(), 0).tolist()
    details = {"seed": seed, "best_epoch": best_epoch, "epochs_run": len(curve),
               "valid_accuracy": best[0], "curve": curve, "layer_weights": layer_weights,
               "seconds": round(time.perf_counter() - start, 3)}
    return _SeedResult(details, test_true, logits.argmax(1).numpy(),
                       _percent(train_true, train_logits.argmax(1).numpy()), test_ids)


def _epoch(run: _Run, model: _Classifier, optimiser: torch.optim.Optimizer,
           schedule: torch.optim.lr_scheduler.LRScheduler, loader: Any) -> float:
    """One pass over the training crops; returns the mean training loss."""
    model.train()
    loss_sum, n_seen = torch.zeros((), device=run.device), 0
    for items in loader:
        ok = run.usable("train", items)
        if not ok:
            continue
        length = min(len(it.audio) for it in ok)  # cut to the shortest item, never pad
        waves = torch.stack([it.audio[:length] for it in ok]).to(run.device)
        y = torch.from_numpy(run.y["train"][[it.index for it in ok]]).to(run.device)
        with run.autocast():
            loss = F.cross_entropy(model(waves), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimiser.step()
        schedule.step()
        loss_sum += loss.detach() * len(ok)
        n_seen += len(ok)
    if n_seen == 0:
        raise run.nothing_decoded("train")
    return float(loss_sum) / n_seen


def _no_weights(encoder: Encoder) -> EmbenchError:
    return EmbenchError(f"Encoder {encoder.name!r} has no trainable weights, so the 'finetune' "
                        f"protocol cannot train it; use one of the task's frozen protocols "
                        f"(`embench list` shows each task's protocols).")


def _trainable(encoder: Encoder) -> nn.Module:
    module = None
    with suppress(TypeError):  # what the base class raises for weight-free encoders
        module = encoder.trainable_module()
    if module is None or not any(True for _ in module.parameters()):
        raise _no_weights(encoder)
    return module


def _split_clips(ctx: EvalContext, labels: tuple[str, ...]
                 ) -> tuple[dict[str, list[Clip]], dict[str, np.ndarray]]:
    """Clips and label indices per split; refuses what cannot be scored fairly."""
    dataset = ctx.clips.dataset_id
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({str(c.target) for c in ctx.clips} - set(index))
    if unknown:
        raise EmbenchError(f"{dataset}: targets {unknown[:5]} are not among the task's labels "
                           f"{list(labels)[:10]}; the task's ClipSet.labels is incomplete.")
    if len(labels) < 2:
        raise EmbenchError(f"{dataset}: classification needs at least two labels, got {labels}.")
    clips = {s: ctx.clips.split(s) for s in SPLITS}
    empty = [split for split, members in clips.items() if not members]
    if empty:
        raise EmbenchError(f"{dataset}: split {empty[0]!r} is empty; fine-tuning needs train, "
                           f"valid and test clips.")
    y = {s: np.array([index[str(c.target)] for c in m], dtype=np.int64) for s, m in clips.items()}
    counts = np.bincount(y["train"], minlength=len(labels))
    missing = [labels[i] for i in np.flatnonzero(counts == 0)]
    if missing:
        raise EmbenchError(f"{dataset}: classes {missing[:10]} have no training clips; "
                           f"fine-tuning cannot learn them. Fix the split or the label list.")
    return clips, y


def finetune_classification(
    ctx: EvalContext, *, epochs: int = 20, lr_encoder: float = 1e-5, lr_head: float = 1e-3,
    batch_size: int = 8, crop_s: float | None = None, patience: int = 5,
    weight_decay: float = 0.01, gradient_checkpointing: bool = True,
    num_workers: int | None = None,
) -> Evaluation:
    """Fine-tune ``ctx.encoder`` with a classification head, once per seed in ``ctx.seeds``.

    ``crop_s``: training crop and evaluation window (default: the encoder's ``window_s``; None
    there too: whole clips). ``num_workers``: decode processes (default 0 on CPU, up to 4 on
    CUDA). Returns test ``accuracy`` and ``macro_f1`` and train ``accuracy`` per seed and
    ``chance``/``majority`` baselines, in percent, with details: per seed the best epoch,
    validation curve, layer weights and confusion matrix; hyper-parameters; skipped clips.
    Raises :class:`EmbenchError` for a weight-free encoder, an empty split or an unlearnable
    class.
    """
    if ctx.encoder is None or not ctx.seeds:
        raise EmbenchError("finetune_classification needs ctx.encoder and at least one seed.")
    encoder = ctx.encoder
    if type(encoder).trainable_module is Encoder.trainable_module:
        raise _no_weights(encoder)  # before loading anything
    labels = _label_names(ctx)
    clips, y = _split_clips(ctx, labels)
    info = encoder.info
    window_s = crop_s if crop_s is not None else info.window_s
    if window_s is not None and window_s * info.sample_rate < info.min_samples:
        raise EmbenchError(f"crop_s {window_s} is shorter than {info.name} accepts "
                           f"({info.min_samples / info.sample_rate:.3f} s).")
    device = torch.device(ctx.device)
    if num_workers is None:
        num_workers = min(4, default_num_workers()) if device.type == "cuda" else 0
    hparams = dict(epochs=epochs, lr_encoder=lr_encoder, lr_head=lr_head, batch_size=batch_size,
                   crop_s=window_s, patience=patience, weight_decay=weight_decay,
                   gradient_checkpointing=gradient_checkpointing, warmup_fraction=WARMUP_FRACTION,
                   schedule="linear warmup, cosine decay", head_dropout=HEAD_DROPOUT,
                   max_grad_norm=MAX_GRAD_NORM, compute_dtype=default_for(device))
    run = _Run(ctx, device, encoder, clips, y, len(labels), hparams, num_workers)
    results, numpy_state = [], np.random.get_state()
    try:
        for seed in ctx.seeds:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                np.random.seed(seed)  # HF speech models draw SpecAugment masks from numpy
                results.append(_train(run, seed))
    finally:
        np.random.set_state(numpy_state)
        encoder.unload()  # fine-tuned weights must never serve a later frozen task
    return _evaluation(run, labels, results)


def _evaluation(run: _Run, labels: tuple[str, ...], results: list[_SeedResult]) -> Evaluation:
    n, first = len(labels), results[0]
    low, high = bootstrap_ci(first.test_true, first.test_pred, _percent, n_resamples=N_BOOTSTRAP,
                             seed=first.details["seed"])
    details = {
        "protocol": "finetune", "units": "percent", "labels": list(labels),
        "n_clips": {s: sum(c.id not in run.skipped for c in m) for s, m in run.clips.items()},
        "hyperparameters": run.hparams,
        "seeds": [{**r.details, "confusion_matrix": _confusion(r.test_true, r.test_pred, n)}
                  for r in results],
        "skipped": [{"clip_id": c, "reason": r} for c, r in sorted(run.skipped.items())],
        "test_accuracy_bootstrap_ci95": {"seed": first.details["seed"], "low": low,
                                         "high": high, "n_resamples": N_BOOTSTRAP},
    }
    y_train = run.y["train"][[c.id not in run.skipped for c in run.clips["train"]]]
    return Evaluation(
        scores={"accuracy": [_percent(r.test_true, r.test_pred) for r in results],
                "macro_f1": [_macro_f1(r.test_true, r.test_pred, n) for r in results]},
        train_scores={"accuracy": [r.train_accuracy for r in results]},
        baselines=classification_baselines(y_train, first.test_true, n),
        details=details,
        skipped=dict(sorted(run.skipped.items())),
        item_scores=_item_scores(results),
    )


def _item_scores(results: list[_SeedResult]) -> ItemScores | None:
    """Each test clip's accuracy (100 or 0) per seed. Every seed scores the same decodable
    clips; should a clip decode for one seed and not another, there are no shared items."""
    ids = results[0].test_ids
    if any(r.test_ids != ids for r in results):
        return None
    return ItemScores(metric="accuracy", clip_ids=list(ids),
                      values=[[100.0 if hit else 0.0 for hit in (r.test_true == r.test_pred)]
                              for r in results])
