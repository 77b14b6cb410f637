"""Frozen classification probes on clip-level embeddings (MARBLE-style).

Every classification task scores an encoder the same way, so that numbers are comparable across
tasks: per-layer clip means (frames averaged over time) are standardised with train statistics,
a small probe is trained on the train split, and *everything* that is chosen - the layer (or a
learned weighted sum of all layers), the learning rate (or ``C``), the stopping epoch - is chosen
on the validation split. The fitting functions never receive test data, so test cannot leak into
model selection; callers evaluate the returned :class:`FittedProbe` on test once.

Speed: all layer candidates of one learning rate are trained together as one stacked model
(``torch.baddbmm`` over a candidate axis). Each candidate still gets exactly the gradient and
Adam update it would get alone (tests check this); they only share the stream of batch orders
and dropout masks. Candidates leave the stack when they early-stop. Randomness comes only from
explicit generators seeded by ``seed``, so a fit is reproducible on CPU and leaves the global
torch RNG untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from embench.probe_base import (
    WEIGHTED_SUM,
    CandidateScore,
    FittedProbe,
    LayerChoice,
    Standardiser,
    check_inputs,
    select_best,
)


@dataclass(frozen=True)
class MLPConfig:
    """Hyper-parameters of the MLP probe; ``lrs`` is the grid searched on validation."""

    hidden: int = 512
    dropout: float = 0.2
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 10
    # Two points bracketing 1e-3 (MARBLE's grid spans 5e-5..1e-2): small enough to run in
    # seconds on 2 cores, a grid nonetheless (a single fixed lr is what made MARBLE's numbers
    # hard to reproduce).
    lrs: tuple[float, ...] = (5e-4, 2e-3)
    threads: int = 1  # torch threads while training: same numbers on any machine, no spinning
    per_layer: bool = True  # False: only the weighted sum is a candidate (needs weighted_sum)
    # Successive halving on validation: after ``prune_after`` epochs only the ``keep_top`` best
    # single layers train on (their curve values are their best up to then). None: no pruning.
    prune_after: int | None = 5
    keep_top: int = 4
    weighted_sum: bool = True


# -- MLP probe -----------------------------------------------------------------------------------
_PARAM_NAMES = ("w1", "b1", "w2", "b2")


def _uniform(shape: tuple[int, ...], fan_in: int, gen: torch.Generator) -> torch.Tensor:
    """nn.Linear's default init (uniform in +-1/sqrt(fan_in)), drawn from ``gen``."""
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound, generator=gen)


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with torch defaults; the fused CPU kernel when available (one memory pass instead of
    about ten, which matters for the ``[C, D, 512]`` first-layer weights)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # older torch without fused CPU Adam
        return torch.optim.Adam(params, lr=lr)


class _Stack:
    """Independent MLPs trained in lock-step, stacked on a leading candidate axis
    (``w1 [C, D, H]``, ``b1 [C, 1, H]``, ``w2 [C, H, K]``, ``b2 [C, 1, K]``). Either candidate
    ``i`` reads layer ``ids[i]``, or (``mix`` given, one candidate) the softmax-weighted sum of all
    layers. The loss is the sum of per-candidate mean losses, so each candidate gets exactly its
    own gradient and Adam update. Early-stopped candidates are dropped (:meth:`keep`) so that late
    epochs only pay for candidates still improving."""

    def __init__(self, ids: list[int], dim: int, n_classes: int, lr: float, cfg: MLPConfig,
                 gen: torch.Generator, mix_layers: int = 0):
        n = len(ids)
        self.ids, self.lr = list(ids), lr
        self.p = {
            "w1": _uniform((n, dim, cfg.hidden), dim, gen),
            "b1": _uniform((n, 1, cfg.hidden), dim, gen),
            "w2": _uniform((n, cfg.hidden, n_classes), cfg.hidden, gen),
            "b2": _uniform((n, 1, n_classes), cfg.hidden, gen),
        }
        if mix_layers:
            self.p["mix"] = torch.zeros(mix_layers)
        for t in self.p.values():
            t.requires_grad_()
        self.opt = _adam(list(self.p.values()), lr)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of ``x [L, N, D]`` this stack reads (all layers for the weighted sum)."""
        if "mix" in self.p or len(self.ids) == x.shape[0]:
            return x
        return x[self.ids]

    def logits(self, x: torch.Tensor, drop_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` from :meth:`inputs`, ``[*, B, D]`` -> ``[C, B, K]``."""
        if "mix" in self.p:
            x = torch.einsum("l,lbd->bd", torch.softmax(self.p["mix"], 0), x)[None]
        h = torch.relu(torch.baddbmm(self.p["b1"], x, self.p["w1"]))
        if drop_mask is not None:
            h = h * drop_mask
        return torch.baddbmm(self.p["b2"], h, self.p["w2"])

    def step(self, x: torch.Tensor, y: torch.Tensor, drop_mask: torch.Tensor | None) -> None:
        out = self.logits(x, drop_mask)
        n_cand, batch, n_classes = out.shape
        loss = F.cross_entropy(out.reshape(-1, n_classes), y.repeat(n_cand), reduction="sum")
        self.opt.zero_grad(set_to_none=True)
        (loss / batch).backward()
        self.opt.step()

    def accuracy(self, x: torch.Tensor, y: torch.Tensor,
                 groups: torch.Tensor | None = None) -> list[float]:
        """Per-candidate accuracy on ``x``; with ``groups`` (row -> clip), of clip predictions
        from the mean class probabilities of each clip's rows (``y`` then holds clip labels)."""
        with torch.no_grad():
            logits = self.logits(self.inputs(x))
            if groups is not None:
                probs = logits.softmax(-1)
                agg = torch.zeros(probs.shape[0], len(y), probs.shape[2], dtype=probs.dtype)
                logits = agg.index_add_(1, groups, probs)
            return (logits.argmax(-1) == y).float().mean(1).tolist()

    def snapshot(self, pos: int) -> dict[str, torch.Tensor]:
        snap = {k: self.p[k][pos].detach().clone() for k in _PARAM_NAMES}
        if "mix" in self.p:
            snap["mix"] = self.p["mix"].detach().clone()
        return snap

    def keep(self, positions: list[int]) -> None:
        """Drop all candidates but ``positions``, carrying their weights and Adam state over."""
        old_p, old_state = self.p, self.opt.state
        rows = torch.tensor(positions)
        self.ids = [self.ids[i] for i in positions]
        self.p = {k: old_p[k].detach()[rows].clone().requires_grad_() for k in _PARAM_NAMES}
        if "mix" in old_p:
            self.p["mix"] = old_p["mix"].detach().clone().requires_grad_()
        self.opt = _adam(list(self.p.values()), self.lr)
        for k, new in self.p.items():
            if state := old_state.get(old_p[k]):
                self.opt.state[new] = {
                    name: (t if k == "mix" or name == "step" else t[rows]).clone()
                    for name, t in state.items()
                }


@dataclass
class _RunResult:
    best_acc: list[float]
    best_epoch: list[int]
    best: list[dict[str, torch.Tensor]]


def _train_epoch(stacks: list[_Stack], xt: torch.Tensor, yt: torch.Tensor, cfg: MLPConfig,
                 gen: torch.Generator) -> None:
    """One pass over the train split in shuffled mini-batches; every stack sees the same batches.
    Each stack's inputs are gathered once per epoch so that batches are cheap slices."""
    order = torch.randperm(xt.shape[1], generator=gen)
    inputs = [s.inputs(xt)[:, order] for s in stacks]
    y = yt[order]
    keep_prob = 1.0 - cfg.dropout
    for start in range(0, len(order), cfg.batch_size):
        stop = min(start + cfg.batch_size, len(order))
        for stack, x in zip(stacks, inputs, strict=True):
            mask = None
            if cfg.dropout > 0:
                shape = (len(stack.ids), stop - start, cfg.hidden)
                mask = (torch.rand(shape, generator=gen) < keep_prob).float() / keep_prob
            stack.step(x[:, start:stop], y[start:stop], mask)


def _train_stacked(xt: torch.Tensor, yt: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor,
                   weighted: bool, n_classes: int, lr: float, cfg: MLPConfig,
                   seed: int, gv: torch.Tensor | None = None) -> _RunResult:
    """Train one MLP per layer of ``xt [L, N, D]`` (plus, if ``weighted``, one on the learned
    weighted sum, candidate ``L``) with per-candidate early stopping on validation accuracy, and
    keep each one's best-epoch weights. A later epoch replaces the best only if strictly better,
    so the earliest best epoch wins."""
    gen = torch.Generator().manual_seed(seed)
    n_layers, _, dim = xt.shape
    stacks = [_Stack(list(range(n_layers)), dim, n_classes, lr, cfg, gen)]
    if weighted and not cfg.per_layer:
        stacks = []
    if weighted:
        stacks.append(_Stack([n_layers], dim, n_classes, lr, cfg, gen, mix_layers=n_layers))
    n_cand = n_layers + int(weighted)
    best_acc, best_epoch = [-1.0] * n_cand, [0] * n_cand
    best: list[dict[str, torch.Tensor]] = [{} for _ in range(n_cand)]
    for epoch in range(1, cfg.max_epochs + 1):
        _train_epoch(stacks, xt, yt, cfg, gen)
        for stack in stacks:
            for pos, acc in enumerate(stack.accuracy(xv, yv, gv)):
                c = stack.ids[pos]
                if acc > best_acc[c]:
                    best_acc[c], best_epoch[c], best[c] = acc, epoch, stack.snapshot(pos)
            alive = [i for i, c in enumerate(stack.ids) if epoch - best_epoch[c] < cfg.patience]
            if epoch == cfg.prune_after and "mix" not in stack.p and len(alive) > cfg.keep_top:
                ranked = sorted(alive, key=lambda i: (-best_acc[stack.ids[i]], stack.ids[i]))
                alive = sorted(ranked[:cfg.keep_top])
            if alive and len(alive) < len(stack.ids):
                stack.keep(alive)
            elif not alive:
                stack.ids = []
        stacks = [s for s in stacks if s.ids]
        if not stacks:
            break
    return _RunResult(best_acc, best_epoch, best)


def _width_groups(train: Sequence[np.ndarray]) -> list[list[int]]:
    """Layers grouped by width (in order of first appearance) so each group can be stacked."""
    groups: dict[int, list[int]] = {}
    for i, a in enumerate(train):
        groups.setdefault(a.shape[1], []).append(i)
    return list(groups.values())


def _mlp_predictor(std: Standardiser, layer: LayerChoice,
                   snap: dict[str, torch.Tensor]) -> Callable[[list[np.ndarray]], np.ndarray]:
    def predict(layers: list[np.ndarray]) -> np.ndarray:
        if len(layers) != len(std.means):
            raise ValueError(f"expected {len(std.means)} layers, got {len(layers)}")
        with torch.no_grad():
            if layer == WEIGHTED_SUM:
                z = torch.from_numpy(np.stack(std.transform(layers)))
                x = torch.einsum("l,lbd->bd", torch.softmax(snap["mix"], 0), z)
            else:
                x = torch.from_numpy(std.transform_layer(int(layer), layers[int(layer)]))
            h = torch.relu(x @ snap["w1"] + snap["b1"])
            return torch.softmax(h @ snap["w2"] + snap["b2"], -1).numpy()

    return predict


def fit_mlp_probe(train: Sequence[np.ndarray], y_train: np.ndarray, valid: Sequence[np.ndarray],
                  y_valid: np.ndarray, n_classes: int, seed: int,
                  config: MLPConfig | None = None,
                  valid_groups: np.ndarray | None = None) -> FittedProbe:
    """Fit the MLP probe for one seed and pick layer / weighted sum, learning rate and epoch by
    validation accuracy. ``train``/``valid`` hold one ``[N, D_l]`` array per layer; labels are
    class indices ``0..n_classes-1``. The weighted sum is a candidate only when all layers share
    one width (and there is more than one layer). With ``valid_groups`` (valid row -> clip index,
    for chunk-level training) ``y_valid`` holds one label per clip and validation accuracy is
    measured on clip predictions aggregated over each clip's rows."""
    cfg = config or MLPConfig()
    groups_v = None if valid_groups is None else np.asarray(valid_groups)
    y_valid = np.asarray(y_valid)
    check_inputs(train, y_train, valid, y_valid if groups_v is None else y_valid[groups_v])
    std = Standardiser.fit(train)
    zt, zv = std.transform(train), std.transform(valid)
    yt = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    yv = torch.as_tensor(y_valid, dtype=torch.long)
    gv = None if groups_v is None else torch.as_tensor(groups_v, dtype=torch.long)
    groups = _width_groups(train)
    weighted = cfg.weighted_sum and len(groups) == 1 and len(train) > 1
    order: list[LayerChoice] = [*range(len(train)), *([WEIGHTED_SUM] if weighted else [])]
    with _torch_threads(cfg.threads):
        return _fit_mlp(zt, zv, yt, yv, gv, groups, weighted, order, std, n_classes, seed, cfg,
                        len(train))


@contextmanager
def _torch_threads(n: int):
    """Run with ``n`` torch threads. One thread by default: the probe's matrices are small, so a
    second thread gains little, an oversubscribed OpenMP pool (decode workers, other processes)
    turns each op into a scheduler wait, and float sums then do not depend on the core count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit_mlp(zt, zv, yt, yv, gv, groups, weighted, order, std, n_classes, seed, cfg,
             num_layers) -> FittedProbe:
    candidates: list[CandidateScore] = []
    snaps: dict[tuple[LayerChoice, float], dict[str, torch.Tensor]] = {}
    for g, layer_ids in enumerate(groups):
        xt = torch.from_numpy(np.stack([zt[i] for i in layer_ids]))
        xv = torch.from_numpy(np.stack([zv[i] for i in layer_ids]))
        names: list[LayerChoice] = [*layer_ids, *([WEIGHTED_SUM] if weighted else [])]
        for k, lr in enumerate(cfg.lrs):
            run_seed = seed * 1_000_003 + g * 101 + k
            run = _train_stacked(xt, yt, xv, yv, weighted, n_classes, lr, cfg, run_seed, gv)
            for c, name in enumerate(names):
                if run.best_epoch[c] == 0:  # not a candidate (per_layer=False)
                    continue
                candidates.append(CandidateScore(name, lr, run.best_acc[c], run.best_epoch[c]))
                snaps[(name, lr)] = run.best[c]
    chosen = select_best(candidates, order, cfg.lrs)
    snap = snaps[(chosen.layer, chosen.hparam)]
    weights = torch.softmax(snap["mix"], 0).tolist() if "mix" in snap else None
    return FittedProbe(
        kind="mlp", layer=chosen.layer, hparam_name="lr", hparam=chosen.hparam,
        epoch=chosen.epoch, valid_accuracy=chosen.valid_accuracy, candidates=candidates,
        num_layers=num_layers, layer_weights=weights,
        _predict=_mlp_predictor(std, chosen.layer, snap),
    )
