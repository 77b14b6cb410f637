"""PNG charts for the markdown leaderboard page (matplotlib, imported only when drawing).

PNG bytes depend on the matplotlib version and the fonts of the machine, so ``leaderboard
check`` never compares them. Each PNG instead carries a fingerprint of the data it shows (a
``tEXt`` chunk, no timestamp, no software version): a chart is current when its fingerprint
matches the one the result files give. Reading it needs only the standard library.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embench.leaderboard_site import ChartSpec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FINGERPRINT_KEY", "draw_png", "fingerprint", "read_fingerprint"]

FINGERPRINT_KEY = "embench-chart-fingerprint"
CHART_STYLE = "2"  # bump when the drawing code changes, so `leaderboard check` asks for a rebuild
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fingerprint(spec: ChartSpec) -> str:
    """sha256 of what the chart shows and how it is drawn."""
    payload = {"style": CHART_STYLE, "kind": spec.kind, "title": spec.title, "data": spec.data}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def read_fingerprint(path: Path) -> str | None:
    """The fingerprint stored in a PNG's text chunks, or ``None`` (not a PNG, or none stored)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            try:
                value = zlib.decompress(rest[1:])
            except zlib.error:
                continue
        else:
            if kind == b"IEND":
                break
            continue
        if key == FINGERPRINT_KEY.encode("latin-1"):
            return value.decode("latin-1")
    return None


def _plain(text: str, limit: int = 40) -> str:
    """Result strings as literal matplotlib text: ``$`` would start mathtext (and can raise)."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _bars(fig: Figure, ax: Axes, data: dict[str, Any], title: str) -> None:
    bars = [b for b in data["bars"] if b["mean"] is not None]
    pos = list(range(len(bars)))[::-1]  # best (first) at the top
    colours = ["#c9c9c9" if b["reported"] else "#4c72b0" for b in bars]
    ax.barh(pos, [b["mean"] for b in bars], color=colours, edgecolor="#555", linewidth=0.5)
    for p, b in zip(pos, bars, strict=True):
        if b["reported"]:
            ax.barh([p], [b["mean"]], color="none", edgecolor="#777", hatch="//", linewidth=0)
        end = b["mean"]
        if b["low"] is not None and b["high"] is not None:
            ax.errorbar(b["mean"], p, xerr=[[b["mean"] - b["low"]], [b["high"] - b["mean"]]],
                        fmt="none", ecolor="#111", capsize=3, linewidth=1)
            end = max(end, b["high"])
        ax.annotate(b["text"], (end, p), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set_yticks(pos, [_plain(b["label"]) for b in bars])
    ends = [v for b in bars for v in (b["mean"], b["high"], b["low"]) if v is not None]
    lo, hi = min([0.0, *ends, *data["baselines"].values()]), max([0.0, *ends])
    ax.set_xlim(lo, hi + 0.12 * (hi - lo or 1.0))  # room for the value labels
    for k, (name, value) in enumerate(sorted(data["baselines"].items())):
        ax.axvline(value, color="#c44e52", linestyle=("--", ":", "-.")[k % 3], linewidth=1,
                   label=_plain(f"{name} baseline"))
    if data["baselines"]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    better = "higher" if data["higher_is_better"] else "lower"
    ax.set_xlabel(_plain(f"{data['metric']} ({better} is better; hatched grey: reported in the "
                         "literature; bars: mean, whiskers: 95% CI over seeds)", 200),
                  fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(_plain(title, 120), fontsize=10)


def _heatmap(fig: Figure, ax: Axes, data: dict[str, Any], title: str) -> None:
    import numpy as np

    values = np.array([[math.nan if v is None else v for v in row] for row in data["values"]],
                      dtype=float).reshape(len(data["rows"]), len(data["columns"]))
    shade = np.full(values.shape, math.nan)
    for j, higher in enumerate(data["higher_is_better"]):
        col = values[:, j]
        ok = ~np.isnan(col)
        if ok.any():
            lo, hi = col[ok].min(), col[ok].max()
            t = np.ones(ok.sum()) if hi == lo else (col[ok] - lo) / (hi - lo)
            shade[ok, j] = t if higher else 1.0 - t
    ax.imshow(np.ma.masked_invalid(shade), cmap="Blues", vmin=-0.1, vmax=1.0, aspect="auto")
    for i, j in np.ndindex(*values.shape):
        if not np.isnan(values[i, j]):
            ax.text(j, i, data["texts"][i][j], ha="center", va="center", fontsize=8,
                    color="white" if shade[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(data["columns"])), [_plain(c, 60) for c in data["columns"]],
                  fontsize=8)
    ax.set_yticks(range(len(data["rows"])), [_plain(r) for r in data["rows"]], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_title(_plain(title, 120) + "\n(colour: position within each column, darkest = best; "
                 "† reported in the literature)", fontsize=9)


def _layers(fig: Figure, ax: Axes, data: dict[str, Any], title: str) -> None:
    for curve in data["curves"]:
        line = ax.plot(range(len(curve["values"])), curve["values"], marker="o", markersize=3,
                       label=_plain(curve["label"]))
        if curve["weighted_sum"] is not None:
            ax.axhline(curve["weighted_sum"], color=line[0].get_color(), linestyle=":",
                       linewidth=1)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="layer", ylabel=_plain(data["metric"]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="dotted: weighted sum of layers", title_fontsize=7)
    ax.set_title(_plain(title, 120), fontsize=9)


def _size(spec: ChartSpec) -> tuple[float, float]:
    if spec.kind == "heatmap":
        return 3.0 + 1.7 * len(spec.data["columns"]), 1.6 + 0.32 * len(spec.data["rows"])
    if spec.kind == "bars":
        return 7.5, 1.6 + 0.32 * len(spec.data["bars"])
    return 7.0, 4.0


def draw_png(spec: ChartSpec, path: Path) -> Path:
    """Draw ``spec`` to ``path`` with its fingerprint (and no timestamp or version) inside."""
    from embench.plots import _figure  # one place that says how to install matplotlib

    fig, ax = _figure(*_size(spec))
    {"bars": _bars, "heatmap": _heatmap, "layers": _layers}[spec.kind](fig, ax, spec.data,
                                                                       spec.title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None,
                                             FINGERPRINT_KEY: fingerprint(spec)})
    tmp.replace(path)
    return path
