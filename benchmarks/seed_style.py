"""The seed notebook's way of embedding audio, kept as the baseline every speed-up is measured
against in the same process: fp32, eager attention, one clip at a time, no cache, no batching.

Fixed-context encoders (CLAP: 10 s) see one window at a time, as the notebook would have to.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class eager_attention:
    """Context manager: switch a transformers model to eager attention, then back."""

    def __init__(self, encoder):
        try:
            self.model = encoder.trainable_module()
        except (TypeError, NotImplementedError):  # weight-free encoders have no attention
            self.model = None
        config = getattr(self.model, "config", None)
        self.previous = getattr(config, "_attn_implementation", None)

    def __enter__(self):
        if hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation("eager")
        return self

    def __exit__(self, *exc):
        if self.previous and hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation(self.previous)


def seed_style_embed(encoder, clip: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One clip, fp32: every layer's time-mean (what the notebook kept), as ``[layers, dim]``;
    for encoders whose layers differ in width (CLAP) the layer means concatenated,
    ``[sum of widths]``. A fixed-context encoder sees consecutive whole windows (a remainder
    shorter than a window is dropped, as a notebook slicing ``clip[i:i + window]`` would), or
    the whole clip when it is shorter than one window."""
    window = encoder.info.window_s
    fixed_context = encoder.name.startswith("clap") and window
    step = int(round(window * encoder.info.sample_rate)) if fixed_context else len(clip)
    step = min(step, len(clip))
    pieces = []
    for start in range(0, len(clip) - step + 1, step):
        layers = encoder.forward(clip[None, start:start + step].to(device).float())
        if isinstance(layers, torch.Tensor):
            layers = layers.unbind(1)
        pieces.append([layer[0].float().mean(dim=0).cpu() for layer in layers])
    means = [torch.stack(per_layer).mean(dim=0) for per_layer in zip(*pieces, strict=True)]
    if len({m.shape for m in means}) == 1:
        return torch.stack(means)
    return torch.cat(means)


def seed_style_throughput(encoder, clips: Sequence[torch.Tensor], device: torch.device, *,
                          warmup: torch.Tensor | None = None) -> float:
    """Audio-seconds per second of :func:`seed_style_embed` over ``clips`` (after one warm-up
    clip: ``warmup``, default ``clips[0]``), with eager attention and no autocast."""
    sr = encoder.info.sample_rate
    with eager_attention(encoder), torch.inference_mode():
        seed_style_embed(encoder, clips[0] if warmup is None else warmup, device)
        _sync(device)
        start = time.perf_counter()
        for clip in clips:
            seed_style_embed(encoder, clip, device)
        _sync(device)
    return sum(len(c) for c in clips) / sr / (time.perf_counter() - start)


def _last_layer_mean(encoder, batch: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` audio -> the last hidden state's time-mean ``[B, dim]`` (the seed's feature)."""
    layers = encoder.forward(batch)
    last = layers[:, -1] if isinstance(layers, torch.Tensor) else layers[-1]
    return last.float().mean(dim=1)


def _batches(n: int, size: int, order: torch.Tensor | None = None):
    order = torch.arange(n) if order is None else order
    for b0 in range(0, n, size):
        yield order[b0:b0 + size].tolist()


def _stack(waves: list[torch.Tensor], rows: list[int]) -> torch.Tensor:
    """One batch; clips of unequal length are cut to the shortest (the notebook cropped every
    clip to the same first seconds)."""
    length = min(len(waves[i]) for i in rows)
    return torch.stack([waves[i][:length] for i in rows])


def seed_style_protocol(encoder, clips, seeds: Sequence[int], *, epochs: int = 10,
                        lr: float = 1e-3, batch_size: int = 16,
                        device: torch.device | None = None) -> dict[str, list[float]]:
    """The seed notebook's "frozen" training loop: a linear head on the last layer's time-mean,
    trained with Adam for ``epochs`` epochs, with the frozen encoder run again on every batch
    of every epoch (no cache), fp32 and eager attention; then one pass over test. One run per
    seed in ``seeds``; no validation split, no model selection (the notebook had none).

    ``clips`` is a :class:`embench.ClipSet` (train and test splits used). Audio is decoded and
    resampled once, up front, as a notebook holding the dataset in memory would (that time is
    part of the protocol's cost, as decoding is part of ``extract``'s). Cost-neutral departures
    from the seed: the whole clip instead of its first 3 s (so both protocols see the same
    audio) and ``lr`` 1e-3 instead of 1e-5 (so the head learns something in 10 epochs). The
    encoder must be loaded. Returns test ``accuracy`` (percent) per seed.
    """
    from embench.audio import load_audio

    device = device or encoder.device
    sr = encoder.info.sample_rate
    labels = tuple(clips.labels) or tuple(sorted({str(c.target) for c in clips}))
    index = {name: i for i, name in enumerate(labels)}
    data = {}
    for split in ("train", "test"):
        chosen = [c for c in clips if c.split == split]
        waves = [torch.from_numpy(load_audio(c.source, sr, c.start_s, c.end_s)) for c in chosen]
        data[split] = (waves, torch.tensor([index[str(c.target)] for c in chosen]))
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    accuracy = []
    with eager_attention(encoder):
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            dim = encoder.info.layer_dim(encoder.info.num_layers - 1)
            torch.manual_seed(seed)
            head = torch.nn.Linear(dim, len(labels)).to(device)
            optimiser = torch.optim.Adam(head.parameters(), lr=lr)
            for _ in range(epochs):
                for rows in _batches(len(train_x), batch_size, torch.randperm(len(train_x),
                                                                              generator=gen)):
                    with torch.no_grad():  # frozen, but computed again every epoch
                        feats = _last_layer_mean(encoder, _stack(train_x, rows).to(device))
                    loss = torch.nn.functional.cross_entropy(head(feats),
                                                             train_y[rows].to(device))
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
            correct = 0
            with torch.no_grad():
                for rows in _batches(len(test_x), batch_size):
                    feats = _last_layer_mean(encoder, _stack(test_x, rows).to(device))
                    correct += int((head(feats).argmax(-1).cpu() == test_y[rows]).sum())
            accuracy.append(100.0 * correct / len(test_x))
    return {"accuracy": accuracy}
