"""Inline SVG charts for the HTML leaderboard: the heat map, per-table bar charts with error
bars and per-layer curves, drawn from the same :class:`ChartSpec` data as the PNGs.

Pure string building, so the page needs no script or library to show them. Every label comes
from a result file or the literature and goes through ``html.escape``; colours and coordinates
are ours. Presentation attributes only (no ``style=``), so the page's CSP can forbid inline
styles.
"""

from __future__ import annotations

import html
import math
from typing import Any

from embench.leaderboard import format_score
from embench.leaderboard_site import ChartSpec

__all__ = ["PALETTE", "heat_colour", "render_svg", "short"]

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
           "#8c8c8c", "#ccb974", "#64b5cd"]  # fmt: skip
MEASURED, REPORTED = "#4c72b0", "#c9c9c9"
LABEL_W, ROW_H, PLOT_W = 230, 22, 380


def short(text: str, limit: int = 34) -> str:
    """Long names would push the plot off the page; the table beside it has the full text."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def heat_colour(t: float) -> str:
    """Light to dark blue for 0..1 (0: worst in the column, 1: best)."""
    lo, hi = (239, 243, 255), (8, 81, 156)
    r, g, b = (round(a + (b - a) * t) for a, b in zip(lo, hi, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _n(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12,
          fill: str = "#222", extra: str = "") -> str:
    return (f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{fill}"{extra}>{html.escape(text)}</text>')


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{_n(width)}" '
            f'height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" '
            f'font-family="sans-serif" aria-label="{html.escape(title)}">'
            f"<title>{html.escape(title)}</title>" + "".join(body) + "</svg>")


def _extent(values: list[float]) -> tuple[float, float]:
    lo, hi = min([0.0, *values]), max([0.0, *values])
    return (lo, hi * 1.08) if hi > lo else (lo, lo + 1.0)


def _bars(spec: ChartSpec) -> str:
    data: dict[str, Any] = spec.data
    bars = data["bars"]
    numbers = [v for b in bars for v in (b["mean"], b["low"], b["high"]) if v is not None]
    numbers += list(data["baselines"].values())
    lo, hi = _extent(numbers)
    top, height = 28, 28 + ROW_H * len(bars) + 26

    def x(v: float) -> float:
        return LABEL_W + (v - lo) / (hi - lo) * PLOT_W

    body = [_text(LABEL_W, 16, f"{data['metric']} "
                  f"({'higher' if data['higher_is_better'] else 'lower'} is better); "
                  "grey: reported in the literature", size=11, fill="#555")]
    for i, bar in enumerate(bars):
        y = top + i * ROW_H
        body.append(_text(LABEL_W - 6, y + 15, short(bar["label"]), anchor="end"))
        if bar["mean"] is None:
            body.append(_text(LABEL_W + 4, y + 15, "n/a", fill="#777"))
            continue
        fill = REPORTED if bar["reported"] else MEASURED
        left, right = sorted((x(max(lo, 0.0)), x(bar["mean"])))
        body.append(f'<rect x="{_n(left)}" y="{_n(y + 3)}" width="{_n(right - left)}" '
                    f'height="{ROW_H - 6}" fill="{fill}"/>')
        end = bar["mean"]
        if bar["low"] is not None and bar["high"] is not None:
            a, b, mid = x(bar["low"]), x(bar["high"]), y + ROW_H / 2
            body.append(f'<path d="M{_n(a)} {_n(mid)}H{_n(b)}M{_n(a)} {_n(mid - 5)}'
                        f'V{_n(mid + 5)}M{_n(b)} {_n(mid - 5)}V{_n(mid + 5)}" stroke="#111" '
                        f'stroke-width="1.2" fill="none"/>')
            end = max(end, bar["high"])
        body.append(_text(x(end) + 4, y + 15, bar["text"], size=11))
    bottom = top + ROW_H * len(bars)
    for k, (name, value) in enumerate(sorted(data["baselines"].items())):
        bx = x(value)
        body.append(f'<path d="M{_n(bx)} {top - 4}V{_n(bottom)}" stroke="#c44e52" '
                    f'stroke-dasharray="4 3" fill="none"/>')
        body.append(_text(bx, bottom + 14 + 10 * (k % 2), f"{name} {format_score(value)}",
                          anchor="middle", size=10, fill="#c44e52"))
    return _svg(LABEL_W + PLOT_W + 70, height, spec.title, body)


def _heatmap(spec: ChartSpec) -> str:
    data: dict[str, Any] = spec.data
    cols, rows, values = data["columns"], data["rows"], data["values"]
    cell_w, cell_h, head = 150, 24, 52
    body = []
    for j, title in enumerate(cols):
        for k, line in enumerate(title.split("\n")):
            body.append(_text(LABEL_W + j * cell_w + cell_w / 2, 12 + 13 * k, short(line, 26),
                              anchor="middle", size=10))
    for j, higher in enumerate(data["higher_is_better"]):
        column = [values[i][j] for i in range(len(rows)) if values[i][j] is not None]
        lo, hi = (min(column), max(column)) if column else (0.0, 0.0)
        for i in range(len(rows)):
            v = values[i][j]
            cx, cy = LABEL_W + j * cell_w, head + i * cell_h
            if v is None:
                body.append(f'<rect x="{_n(cx)}" y="{_n(cy)}" width="{cell_w - 2}" '
                            f'height="{cell_h - 2}" fill="#f4f4f4"/>')
                continue
            t = 1.0 if hi == lo else (v - lo) / (hi - lo)
            t = t if higher else 1.0 - t
            body.append(f'<rect x="{_n(cx)}" y="{_n(cy)}" width="{cell_w - 2}" '
                        f'height="{cell_h - 2}" fill="{heat_colour(t)}"/>')
            body.append(_text(cx + cell_w / 2, cy + 16, data["texts"][i][j], anchor="middle",
                              size=11, fill="#fff" if t > 0.6 else "#111"))
    for i, label in enumerate(rows):
        body.append(_text(LABEL_W - 6, head + i * cell_h + 16, short(label), anchor="end"))
    note = "colour: position within each column (darkest = best there); numbers: main score"
    body.append(_text(8, head + len(rows) * cell_h + 16, note, size=10, fill="#555"))
    return _svg(LABEL_W + cell_w * len(cols) + 10, head + len(rows) * cell_h + 26, spec.title,
                body)


def _layers(spec: ChartSpec) -> str:
    curves = spec.data["curves"]
    width, height, left, top, plot_h = 640, 260, 50, 20, 190
    values = [v for c in curves for v in c["values"] if not math.isnan(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    lo, hi = (lo - 1.0, hi + 1.0) if hi == lo else (lo, hi)
    n_layers = max(len(c["values"]) for c in curves)

    def xy(i: int, v: float) -> str:
        px = left + (i / max(1, n_layers - 1)) * (width - left - 170)
        return f"{_n(px)},{_n(top + (hi - v) / (hi - lo) * plot_h)}"

    body = [f'<path d="M{left} {top}V{top + plot_h}H{width - 170}" stroke="#888" fill="none"/>',
            _text(left - 6, top + 10, format_score(hi), anchor="end", size=10),
            _text(left - 6, top + plot_h, format_score(lo), anchor="end", size=10),
            _text(left, top + plot_h + 16, "layer 0", size=10),
            _text(width - 170, top + plot_h + 16, f"layer {n_layers - 1}", anchor="end",
                  size=10),
            _text(left, top + plot_h + 34, spec.data["metric"], size=11, fill="#555")]
    for k, curve in enumerate(curves):
        colour = PALETTE[k % len(PALETTE)]
        points = " ".join(xy(i, v) for i, v in enumerate(curve["values"]) if not math.isnan(v))
        body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                    f'stroke-width="2"/>')
        body.append(_text(width - 160, top + 12 + 16 * k, short(curve["label"], 26),
                          fill=colour))
    return _svg(width, height, spec.title, body)


def render_svg(spec: ChartSpec) -> str:
    """The chart as one inline ``<svg>`` element."""
    return {"bars": _bars, "heatmap": _heatmap, "layers": _layers}[spec.kind](spec)
