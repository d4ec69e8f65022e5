"""Self-contained SVG charts for the report (no plotting library, no torch).

Every chart has a <title> and an aria-label (screen readers, hover), axes with "nice" ticks
(1, 2 or 5 times a power of ten; integer steps print as integers), a label on each axis
with its unit, and a range that is never padded past zero for values that cannot be
negative (the axis is extended to whole ticks instead of by a percentage).

  line_chart         curves vs step, optionally with a moving average over the raw values
  band_chart         panels sharing one x axis: mean, CI band and error bars per point
  histogram          one distribution
  grouped_histogram  several distributions over the same bins, bars side by side
  forest             differences with their CI, one row each, around a zero line
"""

from __future__ import annotations

import math
from html import escape

COLORS = {"base": "#868e96", "agfsync": "#d9480f", "winner": "#2b8a3e", "loser": "#c92a2a"}
PALETTE = ["#1c7ed6", "#d9480f", "#2b8a3e", "#ae3ec9", "#f08c00", "#0c8599"]
TEXT = 'font-size="11" fill="#333"'


def nice_step(span: float, count: int = 5) -> float:
    raw = (span if span > 0 and math.isfinite(span) else 1.0) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))


def nice_range(low: float, high: float, count: int = 5) -> tuple[float, float, float]:
    """(low, high, step): the range extended to whole ticks. Values >= 0 never get an axis below 0."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return 0.0, 1.0, 0.2
    if high == low:
        pad = abs(high) * 0.1 or 1.0
        low, high = (low - pad if low < 0 or low - pad >= 0 else 0.0), high + pad
    step = nice_step(high - low, count)
    return math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step, step


def ticks(low: float, high: float, step: float) -> list[float]:
    out, k = [], math.ceil(low / step - 1e-9)
    while k * step <= high + step * 1e-6 and len(out) < 50:
        out.append(0.0 if abs(k * step) < step * 1e-9 else k * step)
        k += 1
    return out


def fmt(value: float, step: float | None = None) -> str:
    """A tick or value label: as many decimals as the step needs (none for whole steps)."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if step is None:
        step = abs(value) / 10
    if step < 1e-3 or abs(value) >= 1e6:
        return f"{value:.2g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if step * 10 ** decimals % 1 > 1e-6:  # 2.5, 0.25: one more
        decimals += 1
    return f"{value:.{decimals}f}"


def _open(title: str, width: float, height: float) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(title)}" '
            f'font-family="system-ui,sans-serif"><title>{escape(title)}</title>',
            f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-size="13" font-weight="600">'
            f'{escape(title)}</text>']


class Frame:
    """A plot area inside an SVG: data coordinates to pixels, and its axes."""

    def __init__(self, left: float, top: float, width: float, height: float, x_range, y_range):
        self.left, self.top, self.width, self.height = left, top, width, height
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range

    def x(self, value: float) -> float:
        return self.left + (value - self.x0) / ((self.x1 - self.x0) or 1.0) * self.width

    def y(self, value: float) -> float:
        return self.top + self.height - (value - self.y0) / ((self.y1 - self.y0) or 1.0) * self.height

    def axes(self, x_step: float | None, y_step: float, x_label: str, y_label: str, *,
             x_ticks: list[float] | None = None) -> list[str]:
        bottom, right = self.top + self.height, self.left + self.width
        parts = []
        for value in ticks(self.y0, self.y1, y_step):
            y = self.y(value)
            parts.append(f'<line x1="{self.left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                         f'<text x="{self.left - 5}" y="{y + 4:.1f}" text-anchor="end" {TEXT}>{fmt(value, y_step)}</text>')
        x_values = x_ticks if x_ticks is not None else (ticks(self.x0, self.x1, x_step) if x_step else [])
        for value in x_values:
            x = self.x(value)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#555"/>'
                         f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" {TEXT}>'
                         f'{fmt(value, x_step or 1.0)}</text>')
        parts.append(f'<rect x="{self.left}" y="{self.top}" width="{self.width}" height="{self.height}" '
                     f'fill="none" stroke="#999"/>')
        if x_label:
            parts.append(f'<text x="{self.left + self.width / 2:.1f}" y="{bottom + 32}" text-anchor="middle" '
                         f'{TEXT}>{escape(x_label)}</text>')
        cy = self.top + self.height / 2
        parts.append(f'<text x="14" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 14 {cy:.1f})" '
                     f'{TEXT}>{escape(y_label)}</text>')
        return parts


LEGEND_HEIGHT = 16


def _legend(items: list[tuple[str, str]], x: float, y: float) -> list[str]:
    """Keys in one row above the plot area (never over the data)."""
    parts = []
    for name, color in items:
        parts.append(f'<rect x="{x:.0f}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{x + 14:.0f}" y="{y}" {TEXT}>{escape(name)}</text>')
        x += 24 + 6.2 * len(name)
    return parts


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (the first points average what exists)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], *, x_label: str = "training step",
               y_label: str = "", width: int = 380, height: int = 230, smooth: bool = True) -> str:
    """Curves vs step. With more than 40 points a series is drawn faint, with its moving
    average (window: a 25th of the points) over it."""
    points = [p for values in series.values() for p in values if math.isfinite(p[1])]
    if not points:
        return f'<p class="note">{escape(title)}: no data.</p>'
    x0, x1, x_step = nice_range(min(p[0] for p in points), max(p[0] for p in points))
    y0, y1, y_step = nice_range(min(p[1] for p in points), max(p[1] for p in points), 4)
    windows = {name: max(2, len(v) // 25) if smooth and len(v) > 40 else 1 for name, v in series.items()}
    keyed = len(series) > 1 or max(windows.values()) > 1
    top = 28 + (LEGEND_HEIGHT if keyed else 0)
    frame = Frame(64, top, width - 64 - 14, height - top - 44, (x0, x1), (y0, y1))
    parts = _open(title, width, height) + frame.axes(x_step, y_step, x_label, y_label)
    legend = []
    for i, (name, values) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        values = [p for p in values if math.isfinite(p[1])]
        window = windows[name]
        line = values if window == 1 else list(zip([p[0] for p in values], moving_average([p[1] for p in values], window)))
        if window > 1:
            raw = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in values)
            parts.append(f'<polyline points="{raw}" fill="none" stroke="{color}" stroke-opacity="0.25" stroke-width="1"/>')
        coords = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in line)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        if keyed:
            legend.append((f"{name}" + (f" (mean of {window} steps; raw faint)" if window > 1 else ""), color))
    parts += _legend(legend, frame.left, 28 + 10)
    parts.append("</svg>")
    return "".join(parts)


def band_chart(title: str, panels: list[dict], *, x_label: str = "training step", width: int = 720,
               panel_height: int = 170) -> str:
    """Stacked panels sharing the x axis (ticks at the points' x values). Each panel:
    {"label": y axis label, "points": [(x, mean, ci_low, ci_high)], "color": ..., "scale": 1}."""
    panels = [p for p in panels if p["points"]]
    if not panels:
        return f'<p class="note">{escape(title)}: no data.</p>'
    xs = sorted({pt[0] for p in panels for pt in p["points"]})
    x0, x1 = min(xs), max(xs)
    pad = (x1 - x0) * 0.04 or 1.0
    gap, top = 16, 28
    height = top + len(panels) * (panel_height + gap) + 30
    parts = _open(title, width, height)
    for index, panel in enumerate(panels):
        scale = panel.get("scale", 1.0)
        pts = [(x, m * scale, lo * scale, hi * scale) for x, m, lo, hi in panel["points"]]
        y0, y1, y_step = nice_range(min(p[2] for p in pts), max(p[3] for p in pts), 4)
        frame = Frame(70, top + index * (panel_height + gap), width - 70 - 16, panel_height - 10,
                      (x0 - pad, x1 + pad), (y0, y1))
        last = index == len(panels) - 1
        parts += frame.axes(None, y_step, x_label if last else "", panel["label"],
                            x_ticks=xs if last else [])
        color = panel.get("color", PALETTE[index % len(PALETTE)])
        band = ([f"{frame.x(x):.1f},{frame.y(hi):.1f}" for x, _, _, hi in pts]
                + [f"{frame.x(x):.1f},{frame.y(lo):.1f}" for x, _, lo, _ in reversed(pts)])
        parts.append(f'<polygon points="{" ".join(band)}" fill="{color}" fill-opacity="0.15" stroke="none"/>')
        parts.append(f'<polyline points="{" ".join(f"{frame.x(x):.1f},{frame.y(m):.1f}" for x, m, _, _ in pts)}" '
                     f'fill="none" stroke="{color}" stroke-width="2"/>')
        for x, m, lo, hi in pts:
            cx = frame.x(x)
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{frame.y(lo):.1f}" y2="{frame.y(hi):.1f}" '
                         f'stroke="{color}" stroke-width="1.5"/><circle cx="{cx:.1f}" cy="{frame.y(m):.1f}" r="3.5" '
                         f'fill="{color}"><title>step {fmt(x, 1)}: {fmt(m, y_step / 10)} '
                         f'(95% CI {fmt(lo, y_step / 10)} to {fmt(hi, y_step / 10)})</title></circle>')
        if not last:  # shared x: light guides at the points' steps
            bottom = frame.top + frame.height
            parts += [f'<line x1="{frame.x(x):.1f}" x2="{frame.x(x):.1f}" y1="{bottom}" y2="{bottom + 3}" '
                      f'stroke="#555"/>' for x in xs]
    parts.append("</svg>")
    return "".join(parts)


def histogram(title: str, edges: list[float], counts: list[int], *, x_label: str, y_label: str = "count",
              color: str = "#1c7ed6", width: int = 320, height: int = 210) -> str:
    return grouped_histogram(title, edges, {"": counts}, x_label=x_label, y_label=y_label, colors=[color],
                             width=width, height=height)


def grouped_histogram(title: str, edges: list[float], series: dict[str, list[int]], *, x_label: str,
                      y_label: str = "count", colors: list[str] | None = None, width: int = 360,
                      height: int = 220) -> str:
    if not edges or not any(any(c) for c in series.values()):
        return f'<p class="note">{escape(title)}: no data.</p>'
    colors = colors or [COLORS.get(name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(series)]
    peak = max(max(c) for c in series.values())
    y_step = max(1.0, nice_step(peak, 4))  # counts: whole ticks
    y1 = math.ceil(peak / y_step) * y_step
    x_step = nice_step(edges[-1] - edges[0], 5)
    top = 28 + (LEGEND_HEIGHT if len(series) > 1 else 0)
    frame = Frame(56, top, width - 56 - 12, height - top - 44, (edges[0], edges[-1]), (0, y1))
    parts = _open(title, width, height) + frame.axes(x_step, y_step, x_label, y_label)
    share = 1.0 / len(series)
    for s, (name, counts) in enumerate(series.items()):
        for i, count in enumerate(counts):
            if not count:
                continue
            left = frame.x(edges[i]) + (frame.x(edges[i + 1]) - frame.x(edges[i])) * share * s
            w = max((frame.x(edges[i + 1]) - frame.x(edges[i])) * share - 1, 0.8)
            label = f"{name + ': ' if name else ''}{fmt(edges[i])} to {fmt(edges[i + 1])}: {count}"
            parts.append(f'<rect x="{left:.1f}" y="{frame.y(count):.1f}" width="{w:.1f}" '
                         f'height="{frame.y(0) - frame.y(count):.1f}" fill="{colors[s]}"><title>{escape(label)}'
                         f'</title></rect>')
    if len(series) > 1:
        parts += _legend([(name, colors[i]) for i, name in enumerate(series)], frame.left, 28 + 10)
    parts.append("</svg>")
    return "".join(parts)


def forest(title: str, rows: list[tuple[str, float, float, float, str]], *, x_label: str, width: int = 760) -> str:
    """One row per (label, value, ci_low, ci_high, color): a dot at the value, a whisker over
    the CI, and a zero line: a CI that crosses it is no measurable change."""
    if not rows:
        return f'<p class="note">{escape(title)}: no data.</p>'
    low = min(0.0, *(r[2] for r in rows))
    high = max(0.0, *(r[3] for r in rows))
    x0, x1, x_step = nice_range(low, high, 5)
    row_h = 26
    height = 28 + row_h * len(rows) + 46
    frame = Frame(190, 28, width - 190 - 170, row_h * len(rows), (x0, x1), (0, len(rows)))
    parts = _open(title, width, height)
    for value in ticks(x0, x1, x_step):
        x = frame.x(value)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{frame.top + frame.height}" '
                     f'stroke="{"#333" if value == 0 else "#eee"}"/><text x="{x:.1f}" y="{frame.top + frame.height + 16}" '
                     f'text-anchor="middle" {TEXT}>{fmt(value, x_step)}</text>')
    parts.append(f'<text x="{frame.left + frame.width / 2:.1f}" y="{height - 8}" text-anchor="middle" {TEXT}>'
                 f'{escape(x_label)}</text>')
    for i, (label, value, lo, hi, color) in enumerate(rows):
        y = frame.top + row_h * (i + 0.5)
        parts.append(f'<text x="{frame.left - 8}" y="{y + 4:.1f}" text-anchor="end" {TEXT}>{escape(label)}</text>'
                     f'<line x1="{frame.x(lo):.1f}" x2="{frame.x(hi):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}" '
                     f'stroke-width="2.5"/><circle cx="{frame.x(value):.1f}" cy="{y:.1f}" r="5" fill="{color}"/>'
                     f'<text x="{frame.left + frame.width + 8}" y="{y + 4:.1f}" {TEXT}>{value:+.2f} '
                     f'[{lo:+.2f}, {hi:+.2f}]</text>')
    parts.append("</svg>")
    return "".join(parts)
