"""PNG pictures of classification results: the test confusion matrix, the per-layer validation
curve (the 'which layer' plot of layer-wise probing studies) and a 2-D PCA of clip means.

matplotlib is optional (``pip install 'embench[plots]'``) and imported only when drawing. Figures
use the ``Figure`` API with the Agg canvas, not pyplot: no global backend switch and no leaked
figures for a notebook user. Result strings only become matplotlib text; file names are sanitised.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embench.errors import EmbenchError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from embench.features import Features
    from embench.results import RunResult, TaskResult
    from embench.task import ClipSet

WEIGHTED_SUM = "weighted_sum"  # the probe's layer choice for the learned mix of all layers


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise EmbenchError("Plotting needs matplotlib: pip install 'embench[plots]' "
                           "(or pip install matplotlib).") from None
    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return Path(path)


def safe_name(*parts: str) -> str:
    """A file-name stem from result strings: nothing but ``[A-Za-z0-9._-]``, no leading dot, so
    a hostile encoder name cannot leave the output folder or hide the file."""
    joined = "__".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts)
    return joined.lstrip(".") or "_"


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str,
                   path: Path) -> Path:
    """Counts in the cells, colour by row-normalised fraction: classes with few test clips stay
    as visible as large ones, and the diagonal reads as per-class recall."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = counts.shape[0]
    if counts.shape != (n, n) or len(labels) != n:
        raise ValueError(f"confusion matrix {counts.shape} does not match {len(labels)} labels")
    rows = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    side = max(5.0, 0.55 * n + 3.0)
    fig, ax = _figure(side + 1.2, side)
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    names = [str(s) for s in labels]
    ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), names)
    ax.set(xlabel="predicted", ylabel="true")
    for i, j in np.ndindex(*counts.shape) if n <= 30 else ():  # more would overlap
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=9 if n <= 12 else 7,
                color="white" if frac[i, j] > 0.5 else "black")
    total = int(counts.sum())
    acc = 100.0 * np.trace(counts) / total if total else float("nan")
    ax.set_title(f"{title}\naccuracy {acc:.1f}% on {total} clips", fontsize=10)
    return _save(fig, path)


def _as_float(value: Any) -> float:
    """Result JSON stores a layer that was never a candidate as null (or -inf): plot a gap."""
    out = math.nan if value is None else float(value)
    return out if math.isfinite(out) else math.nan


def plot_layer_curve(per_seed_curves: Sequence[Sequence[float | None]],
                     weighted_sum_values: Sequence[float | None], title: str, path: Path,
                     chosen_layers: Sequence[int | str] = ()) -> Path:
    """Validation accuracy per layer: mean over seeds with the min-max band, the weighted-sum
    probe as a dashed line, and each seed's chosen layer (or weighted sum) starred, so a reader
    sees both where the information lives and how stable the selection is."""
    curves = np.array([[_as_float(v) for v in c] for c in per_seed_curves], dtype=float)
    if curves.ndim != 2 or curves.size == 0:
        raise ValueError("plot_layer_curve needs at least one non-empty per-seed curve")
    layers = np.arange(curves.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column is a gap, not news
        mean = np.nanmean(curves, axis=0)
        low, high = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
    fig, ax = _figure(max(6.0, 0.35 * len(layers) + 4.0), 4.2)
    n_seeds = curves.shape[0]
    ax.plot(layers, mean, marker="o", color="tab:blue", label=f"layer probe (mean of {n_seeds} "
            f"seed{'s' if n_seeds != 1 else ''})")
    if n_seeds > 1:
        ax.fill_between(layers, low, high, color="tab:blue", alpha=0.2, label="min-max over seeds")
    weighted = [w for w in (_as_float(v) for v in weighted_sum_values) if not math.isnan(w)]
    if weighted:
        ax.axhline(float(np.mean(weighted)), color="tab:orange", linestyle="--",
                   label=f"weighted sum of all layers (mean of {len(weighted)})")
    picks = Counter(WEIGHTED_SUM if c == WEIGHTED_SUM else int(c) for c in chosen_layers)
    labelled = False
    for choice, count in sorted(picks.items(), key=lambda kv: str(kv[0])):
        if choice == WEIGHTED_SUM:  # its own x slot, right of the last layer
            x, y = len(layers), float(np.mean(weighted)) if weighted else math.nan
        else:
            x, y = choice, mean[choice] if 0 <= choice < len(mean) else math.nan
        if not math.isnan(y):
            ax.plot([x], [y], marker="*", markersize=16, color="tab:red", linestyle="none",
                    label=None if labelled else "chosen on validation (× seeds)")
            ax.annotate(f"×{count}", (x, y), textcoords="offset points", xytext=(0, 10),
                        ha="center", fontsize=9, color="tab:red")
            labelled = True
    slots = [*layers, len(layers)] if weighted else list(layers)
    ax.set_xticks(slots, [*map(str, layers), "weighted\nsum"][:len(slots)])
    ax.set_xlim(-0.5, slots[-1] + 0.5)
    ax.set(xlabel="layer", ylabel="validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.margins(y=0.15)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """First two principal components of the standardised rows of ``x`` and the fraction of
    variance each explains. Standardising first stops a few large-scale dimensions (common in
    raw embeddings) from being the whole picture; constant features keep scale 1."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    coords, ratios, k = np.zeros((x.shape[0], 2)), np.zeros(2), min(2, vt.shape[0])
    coords[:, :k] = z @ vt[:k].T
    total = float((s**2).sum())
    ratios[:k] = s[:k] ** 2 / total if total > 0 else 0.0
    return coords, (float(ratios[0]), float(ratios[1]))


def plot_projection(embeddings: np.ndarray, labels: Sequence[str], title: str, path: Path,
                    classes: Sequence[str] | None = None) -> Path:
    """Scatter of the 2-D PCA of ``embeddings [N, D]``, one colour per class (in ``classes``
    order, default sorted), explained variance in the axis labels so nobody over-reads it."""
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] != len(labels) or x.shape[0] < 2:
        raise ValueError(f"need [N>=2, D] embeddings with one label per row, got {x.shape} and "
                         f"{len(labels)} labels")
    names = [str(s) for s in labels]
    order = [str(c) for c in classes] if classes is not None else sorted(set(names))
    order += sorted(set(names) - set(order))
    coords, (r1, r2) = pca_2d(x)
    fig, ax = _figure(8.0, 5.5)
    from matplotlib import colormaps  # present: _figure checked
    cmap = colormaps["tab10" if len(order) <= 10 else "tab20"]
    for k, name in enumerate(order):
        rows = [i for i, s in enumerate(names) if s == name]
        if rows:
            ax.scatter(coords[rows, 0], coords[rows, 1], s=18, alpha=0.8, color=cmap(k % cmap.N),
                       marker="os^Dv<>p"[(k // cmap.N) % 8], label=f"{name} ({len(rows)})")
    ax.set(xlabel=f"PC1 ({100 * r1:.1f}% of variance)", ylabel=f"PC2 ({100 * r2:.1f}% of variance)")
    ax.grid(alpha=0.3)
    ax.legend(title="class", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncols=1 if len(order) <= 20 else 2)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def is_classification(result: TaskResult) -> bool:
    """Whether ``result`` came from the classification probe (per-seed confusion matrices)."""
    seeds = result.details.get("seeds")
    return (isinstance(seeds, list) and bool(seeds) and isinstance(seeds[0], dict)
            and "confusion_matrix" in seeds[0] and "labels" in result.details)


def write_classification_plots(result: TaskResult, out_dir: Path,
                               features: Features | None = None,
                               clips: ClipSet | None = None) -> list[Path]:
    """Confusion matrix (first seed), layer curve and, given features and clips, the PCA of all
    clip means at the layer the first seed's probe chose. Returns the files written."""
    if not is_classification(result):
        raise EmbenchError(f"{result.encoder} on {result.task}: not a classification result "
                           f"(no per-seed confusion matrices); nothing to plot.")
    labels = [str(s) for s in result.details["labels"]]
    seeds: list[dict[str, Any]] = result.details["seeds"]
    first, stem = seeds[0], safe_name(result.encoder, result.task, result.protocol)
    name, out = f"{result.encoder} · {result.task} · {result.protocol}", Path(out_dir)
    written = [plot_confusion(first["confusion_matrix"], labels,
                              f"{name}: test confusion (seed {first.get('seed', 0)})",
                              out / f"{stem}__confusion.png")]
    curves = [s["valid_accuracy_by_layer"] for s in seeds if s.get("valid_accuracy_by_layer")]
    if curves:
        written.append(plot_layer_curve(
            curves, [s.get("valid_accuracy_weighted_sum") for s in seeds],
            f"{name}: validation accuracy by layer", out / f"{stem}__layers.png",
            chosen_layers=[s["layer"] for s in seeds if "layer" in s]))
    if features is not None and clips is not None:
        chosen = first.get("layer")
        layer = features.num_layers - 1 if chosen == WEIGHTED_SUM else int(chosen)
        if not 0 <= layer < features.num_layers:
            raise EmbenchError(f"{name}: the probe chose layer {layer}, but the features have "
                               f"{features.num_layers} layers; were they made by another run?")
        note = " (probe chose the weighted sum; last layer shown)" if chosen == WEIGHTED_SUM else ""
        have = set(features.clip_ids)
        picked = [c for c in clips if c.id in have]
        if len(picked) >= 2:
            x = features.clip_means(layer, [c.id for c in picked])
            written.append(plot_projection(
                x, [str(c.target) for c in picked],
                f"{name}: PCA of clip means, layer {layer}{note}\n"
                f"{len(picked)} train+valid+test clips", out / f"{stem}__pca.png", classes=labels))
    return written


def load_run(path: Path) -> RunResult:
    """Read a run file, turning every way it can be wrong into a message that says what to do."""
    from embench.results import RunResult

    path = Path(path)
    if not path.is_file():
        raise EmbenchError(f"No result file at {path}: pass a run-*.json written by `embench run` "
                           f"(they are in its --output-dir, default ./embench-results).")
    try:
        return RunResult.model_validate_json(path.read_bytes())
    except ValueError as exc:  # pydantic's ValidationError and UnicodeDecodeError included
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EmbenchError(f"{path} is not an embench run result ({first}); pass a run-*.json "
                           f"written by `embench run`.") from None


def projection_inputs(run: RunResult, result: TaskResult
                      ) -> tuple[Features | None, ClipSet | None, str | None]:
    """The cached features and the task's clips (for labels) behind ``result``, or a reason why
    they cannot be had. The cache keeps no labels, hence the task's ClipSet."""
    from embench.cache import CacheKey, EmbeddingCache, _safe_dirname
    from embench.features import Features
    from embench.plugins import get_registry

    digest = result.preprocessing.cache_key if result.preprocessing else None
    if run.spec is None or not digest:
        return None, None, "the result records no cache folder or cache key"
    cache_dir = Path(run.spec.cache_dir) / _safe_dirname(result.encoder) / digest
    try:
        key = CacheKey(**json.loads((cache_dir / "key.json").read_text()))
    except FileNotFoundError:
        return None, None, f"no cached embeddings at {cache_dir} (rerun the same `embench run`)"
    except (OSError, ValueError, TypeError) as exc:
        return None, None, f"unreadable cache key {cache_dir / 'key.json'}: {exc}"
    cache = EmbeddingCache(Path(run.spec.cache_dir), key)
    if cache.dir != cache_dir:
        return None, None, f"{cache_dir}/key.json does not match its folder"
    try:
        clips = get_registry().task(result.task).load(Path(run.spec.data_dir))
    except Exception as exc:
        return None, None, f"cannot load the clips of task {result.task!r} for labels: {exc}"
    if clips.dataset_id != result.dataset_id:
        return None, None, (f"task {result.task!r} now loads {clips.dataset_id!r}, the result "
                            f"was on {result.dataset_id!r}")
    ids = [c.id for c in clips if c.id in cache.index()]
    if len(ids) < 2:
        return None, None, f"fewer than two of the task's clips are cached in {cache_dir}"
    arrays = cache.read(ids[0])
    dims = tuple(int(a.shape[1]) for a in arrays)
    return Features(cache=cache, clip_ids=ids, num_layers=len(arrays),
                    dims=dims if len(set(dims)) > 1 else (dims[0],)), clips, None


def _check_writable(folder: Path) -> None:
    """Create ``folder`` and write a file there before drawing anything, so an unusable ``-o``
    is one clear message rather than a traceback from the first savefig."""
    from embench.folders import writable_folder_problem

    why = writable_folder_problem(folder)
    if why:
        raise EmbenchError(f"cannot write {folder} ({why}); choose another -o")


def plot_run(path: Path, out_dir: Path | None = None,
             log: Callable[[str], None] = print) -> list[Path]:
    """Plots for every classification result of one run file, into ``out_dir`` (default
    ``run-<id>-plots`` beside the file). A projection that cannot be drawn is skipped with one
    line to ``log``; the other plots are still written."""
    run = load_run(path)
    results = [r for r in run.results if is_classification(r)]
    if not results:
        raise EmbenchError(f"{path} holds no classification results (tasks: "
                           f"{sorted({r.task for r in run.results}) or 'none'}); `embench plot` "
                           f"draws classification probe results only.")
    out = Path(out_dir) if out_dir is not None else Path(path).parent / f"run-{run.run_id}-plots"
    _check_writable(out)
    written: list[Path] = []
    for result in results:
        features, clips, why = projection_inputs(run, result)
        if why:
            log(f"No projection for {result.encoder} on {result.task}: {why}.")
        written += write_classification_plots(result, out, features, clips)
    return written
