"""Small self-contained SVG charts for the report (no plotting library, no torch)."""

from __future__ import annotations

import math
from html import escape

COLORS = {"base": "#8a8f98", "agfsync": "#d9480f", "winner": "#2b8a3e", "loser": "#c92a2a"}
PALETTE = ["#1c7ed6", "#d9480f", "#2b8a3e", "#ae3ec9", "#f08c00", "#0c8599"]


def _fmt(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _nice_range(low: float, high: float) -> tuple[float, float]:
    if not (math.isfinite(low) and math.isfinite(high)):
        return 0.0, 1.0
    if high == low:
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def bar_pair(title: str, base: float, tuned: float, *, lower_is_better: bool = False, width: int = 220,
             height: int = 180) -> str:
    """Two bars, base and AGFSync, from zero (or from the smaller value's scale when negative)."""
    top = max(base, tuned, 0.0)
    bottom = min(base, tuned, 0.0)
    span = (top - bottom) or 1.0
    plot_top, plot_bottom = 50, height - 26
    scale = (plot_bottom - plot_top) / span
    zero_y = plot_top + top * scale
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="600">{escape(title)}</text>',
             f'<text x="{width / 2}" y="29" text-anchor="middle" font-size="10" fill="#555">'
             f'{"lower is better" if lower_is_better else "higher is better"}</text>']
    for i, (name, value) in enumerate((("base", base), ("agfsync", tuned))):
        x = 40 + i * 80
        y = zero_y - max(value, 0) * scale
        h = abs(value) * scale
        parts.append(f'<rect x="{x}" y="{y:.1f}" width="60" height="{max(h, 0.5):.1f}" fill="{COLORS[name]}"/>')
        label_y = y - 3 if value >= 0 else min(y + h + 11, height - 20)
        parts.append(f'<text x="{x + 30}" y="{label_y:.1f}" text-anchor="middle" font-size="11">{_fmt(value)}</text>')
        parts.append(f'<text x="{x + 30}" y="{height - 8}" text-anchor="middle" font-size="11">'
                     f'{"Base" if name == "base" else "AGFSync"}</text>')
    parts.append(f'<line x1="30" x2="{width - 20}" y1="{zero_y:.1f}" y2="{zero_y:.1f}" stroke="#333"/>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], *, width: int = 360, height: int = 200,
               x_label: str = "step") -> str:
    points = [p for values in series.values() for p in values if math.isfinite(p[1])]
    if not points:
        return f"<p>{escape(title)}: no data</p>"
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = _nice_range(min(p[1] for p in points), max(p[1] for p in points))
    left, right, top, bottom = 62, width - 14, 24, height - 30
    sx = (right - left) / ((x1 - x0) or 1.0)
    sy = (bottom - top) / (y1 - y0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<text x="{width / 2}" y="15" text-anchor="middle" font-size="13" font-weight="600">{escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#bbb"/>']
    for value in (y0, (y0 + y1) / 2, y1):
        y = bottom - (value - y0) * sy
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{_fmt(value)}</text>')
    for value in (x0, x1):
        x = left + (value - x0) * sx
        parts.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle" font-size="10">{_fmt(value)}</text>')
    parts.append(f'<text x="{(left + right) / 2}" y="{height - 4}" text-anchor="middle" font-size="10">{escape(x_label)}</text>')
    for i, (name, values) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{left + (x - x0) * sx:.1f},{bottom - (y - y0) * sy:.1f}" for x, y in values if math.isfinite(y))
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        if len(series) > 1:
            parts.append(f'<text x="{right - 4}" y="{top + 12 + 12 * i}" text-anchor="end" font-size="10" '
                         f'fill="{color}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(title: str, edges: list[float], counts: list[int], *, color: str = "#1c7ed6", width: int = 300,
              height: int = 170) -> str:
    if not counts:
        return f"<p>{escape(title)}: no data</p>"
    left, right, top, bottom = 36, width - 10, 24, height - 30
    peak = max(counts) or 1
    bar_w = (right - left) / len(counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<text x="{width / 2}" y="15" text-anchor="middle" font-size="13" font-weight="600">{escape(title)}</text>']
    for i, count in enumerate(counts):
        h = (bottom - top) * count / peak
        parts.append(f'<rect x="{left + i * bar_w:.1f}" y="{bottom - h:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{_fmt(edges[i])}..{_fmt(edges[i + 1])}: {count}</title></rect>')
    parts.append(f'<text x="{left}" y="{bottom + 14}" font-size="10">{_fmt(edges[0])}</text>')
    parts.append(f'<text x="{right}" y="{bottom + 14}" text-anchor="end" font-size="10">{_fmt(edges[-1])}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" font-size="10">{peak}</text>')
    parts.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#333"/>')
    parts.append("</svg>")
    return "".join(parts)
