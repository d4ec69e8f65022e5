"""The report's figures as a paper needs them (matplotlib): PDF and PNG (150 dpi) of each,
written next to the report (results/figures/ for results/report.html), the same PNGs inline
on the page (agfsync.report.sections_figures).

Per model, from the result files (results/{model}/{metric}.json) and the trajectory:

  {model}-differences   AGFSync - base of every metric with a paired CI, with its 95% CI as an
                        error bar, a dashed zero line. One panel per unit: the accuracies (TIFA,
                        gold) share one in percentage points; every other metric has its own
                        panel in its own units (their scales differ: 0-100 scores, VQAScore's
                        probabilities, ImageReward's normalised reward), so no difference is
                        rescaled and every axis reads in the units of the results table.
                        Green: the CI is above zero for a metric where higher is better (or below
                        where lower is); red: the other way; gray: it holds zero.
  {model}-values        per metric, base and AGFSync with the 95% CI of each mean
                        (variants.<v>.ci); the y axis starts where the data does (at 0 only
                        where the data comes near it), so a 2-point change is not a sliver.
  {model}-element_types TIFA (VQA) and gold per element type: the paired difference with its
                        CI, base -> AGFSync beside each row (difference.by_element_type).
  {model}-trajectory    proxy and gold (else TIFA) along training: the mean at each evaluated
                        step with its 95% CI (error bars and a band).

Deterministic: matplotlib's defaults plus RC (DejaVu Sans, shipped with matplotlib; TrueType
fonts in the PDF), no creation date or software stamp in the files; the same inputs give the
same bytes. The object API (matplotlib.figure.Figure) only: no pyplot, no global backend.
Every file is written atomically (agfsync.core.io.atomic_open: temp file + os.replace).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib.style
from matplotlib.figure import Figure

from agfsync.core.io import atomic_open
from agfsync.report.figures import MEASURE_AXES
from agfsync.report.sections_results import DELTA_COLORS, ELEMENT_ORDER
from agfsync.report.verdicts import DISPLAY, PERCENT, TITLES, improved, interval, scale_of, value_text

DPI = 150
KINDS = ("values", "differences", "element_types", "trajectory")  # file names: {model}-{kind}.{pdf,png}
FORMATS = ("pdf", "png")
RC = {"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "font.size": 8.5, "axes.titlesize": 9,
      "axes.labelsize": 8.5, "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
      "figure.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42,
      "savefig.facecolor": "white", "figure.facecolor": "white", "axes.grid": True, "grid.color": "#e9ecef",
      "grid.linewidth": 0.6, "axes.axisbelow": True}
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": "agfsync"}
PNG_METADATA = {"Software": None}
BASE_COLOR, AGFSYNC_COLOR = "#868e96", "#1c7ed6"
NO_VALUES = {"judge"}  # the judge's variants are win and loss rates of one comparison, not two values


def style():
    """matplotlib's defaults and RC, whatever the user's matplotlibrc says."""
    return matplotlib.style.context(["default", RC])


def save(fig: Figure, folder, name: str) -> list[Path]:
    """fig as folder/name.pdf and folder/name.png (DPI), each atomically; the paths written."""
    written = []
    for ext in FORMATS:
        path = Path(folder) / f"{name}.{ext}"
        options = {"metadata": PDF_METADATA} if ext == "pdf" else {"metadata": PNG_METADATA, "dpi": DPI}
        with atomic_open(path, "wb") as handle:
            fig.savefig(handle, format=ext, **options)
        written.append(path)
    return written


def _write(folder, name: str, build: Callable[[], Figure | None]) -> list[Path]:
    with style():
        fig = build()
        return [] if fig is None else save(fig, folder, name)


def data_limits(low: float, high: float, *, pad: float = 0.12, percent: bool = False) -> tuple[float, float]:
    """Axis limits around the data [low, high], padded; from 0 only where the data comes near
    it (low within a quarter of high); percentages stay within 0-100."""
    span = high - low
    if span <= 0:
        span = abs(high) * 0.1 or 1.0
    lo, hi = low - pad * span, high + pad * span
    if 0 <= low <= 0.25 * high:
        lo = 0.0
    if percent:
        lo, hi = max(lo, 0.0), min(hi, 100.0) if high <= 100 else hi
    return lo, hi


def _grid(n: int, ncols: int, width: float, height: float, title: str) -> tuple[Figure, list]:
    """A figure of n panels in rows of ncols (spare panels hidden)."""
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols + 0.3, height * nrows + 0.45), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, axes[:n]


def _arrow(result: dict) -> str:
    return "\u2191" if result.get("higher_is_better", True) else "\u2193"


def _signed(x: float, digits: int) -> str:
    return f"{x:+.{digits}f}".replace("-", "\u2212")


def _forest(ax, rows: list[tuple[str, float, float, float, str, str]], x_label: str) -> None:
    """Horizontal error bars, one row per (label, value, low, high, color, note), top to bottom,
    with a dashed zero line; `note` is printed right of the axes."""
    for i, (_, value, low, high, color, _) in enumerate(rows):
        ax.errorbar(value, i, xerr=[[value - low], [high - value]], fmt="o", color=color, ecolor=color,
                    capsize=3, markersize=4.5, elinewidth=1.4)
    ax.axvline(0.0, color="#343a40", linewidth=0.8, linestyle="--", zorder=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    low = min(0.0, *(r[2] for r in rows))
    high = max(0.0, *(r[3] for r in rows))
    pad = 0.08 * ((high - low) or 1.0)
    ax.set_xlim(low - pad, high + pad)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(x_label)
    for i, row in enumerate(rows):
        ax.text(1.02, i, row[5], transform=ax.get_yaxis_transform(), va="center", ha="left", fontsize=7.5)


# ----------------------------------------------------------------------------- differences


def difference_rows(results: dict[str, dict]) -> list[tuple[str, list[tuple]]]:
    """(x label, rows) per panel: every metric with a paired CI, in the table's order; the
    accuracies share a panel in percentage points, every other metric has its own."""
    panels: dict[str, tuple[str, list[tuple]]] = {}
    for metric in DISPLAY:
        result = results.get(metric)
        ci = interval(result["difference"]) if result else None
        if ci is None:
            continue
        scale, _, digits = scale_of(metric)
        key, label = (("accuracy", "AGFSync \u2212 base (percentage points)") if metric in PERCENT else
                      (metric, f"AGFSync \u2212 base: {TITLES[metric]}"))
        color = DELTA_COLORS[improved(result["difference"], result["higher_is_better"])]
        note = f"{_signed(ci.value * scale, digits)} [{_signed(ci.ci_low * scale, digits)}, " \
               f"{_signed(ci.ci_high * scale, digits)}]"
        row = (f"{TITLES[metric]} {_arrow(result)}", ci.value * scale, ci.ci_low * scale, ci.ci_high * scale, color,
               note)
        panels.setdefault(key, (label, []))[1].append(row)
    return list(panels.values())


def differences_plot(model: str, results: dict[str, dict]) -> Figure | None:
    panels = difference_rows(results)
    if not panels:
        return None
    heights = [len(rows) + 1.6 for _, rows in panels]
    fig = Figure(figsize=(6.4, 0.32 * sum(heights) + 0.5), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights}).ravel()
    for ax, (label, rows) in zip(axes, panels):
        _forest(ax, rows, label)
    fig.suptitle(f"{model}: AGFSync \u2212 base, 95% paired bootstrap CI")
    return fig


def metric_figure(model: str, results: dict[str, dict], folder) -> list[Path]:
    """{model}-differences.{pdf,png} (nothing without a metric with a paired CI)."""
    return _write(folder, f"{model}-differences", lambda: differences_plot(model, results))


# ----------------------------------------------------------------------------- values


def value_metrics(results: dict[str, dict]) -> list[str]:
    return [m for m in DISPLAY if m in results and m not in NO_VALUES]


def values_plot(model: str, results: dict[str, dict]) -> Figure | None:
    metrics = value_metrics(results)
    if not metrics:
        return None
    fig, axes = _grid(len(metrics), 4, 1.75, 2.2, f"{model}: base vs AGFSync, mean with 95% CI")
    for ax, metric in zip(axes, metrics):
        result = results[metric]
        scale = 100.0 if metric in PERCENT else 1.0
        lows, highs = [], []
        for x, (variant, color) in enumerate((("base", BASE_COLOR), ("agfsync", AGFSYNC_COLOR))):
            part = result["variants"][variant]
            value, ci = part["value"] * scale, part.get("ci") or {}
            err = None
            if "ci_low" in ci and "ci_high" in ci:
                low, high = ci["ci_low"] * scale, ci["ci_high"] * scale
                err = [[value - low], [high - value]]
            else:
                low = high = value
            lows.append(low)
            highs.append(high)
            ax.errorbar(x, value, yerr=err, fmt="o", color=color, ecolor=color, capsize=4, markersize=5,
                        elinewidth=1.5)
            ax.annotate(value_text(metric, part["value"]), (x, high), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
        lo, hi = data_limits(min(lows), max(highs), pad=0.2, percent=metric in PERCENT)
        ax.set_ylim(lo, hi)
        ax.set_xlim(-0.6, 1.6)
        ax.set_xticks([0, 1], ["base", "AGFSync"])
        ax.grid(axis="x", visible=False)
        ax.set_title(textwrap.fill(f"{TITLES[metric]} {_arrow(result)}", 24))
        ax.set_ylabel("%" if metric in PERCENT else "score")
    return fig


def values_figure(model: str, results: dict[str, dict], folder) -> list[Path]:
    """{model}-values.{pdf,png} (nothing without a result file)."""
    return _write(folder, f"{model}-values", lambda: values_plot(model, results))


# ----------------------------------------------------------------------------- element types


def _order(names) -> list[str]:
    return sorted(names, key=lambda n: (ELEMENT_ORDER.index(n) if n in ELEMENT_ORDER else len(ELEMENT_ORDER), n))


def element_type_plot(model: str, results: dict[str, dict]) -> Figure | None:
    metrics = [m for m in ("gold", "tifa") if (results.get(m) or {}).get("difference", {}).get("by_element_type")]
    if not metrics:
        return None
    n = max(len(results[m]["difference"]["by_element_type"]) for m in metrics)
    fig, axes = _grid(len(metrics), 2, 3.9, 0.34 * n + 1.0, f"{model}: per element type, AGFSync \u2212 base, 95% CI")
    for ax, metric in zip(axes, metrics):
        parts = results[metric]["difference"]["by_element_type"]
        rows = []
        for name in _order(parts):
            p = parts[name]
            rows.append((f"{name} (n={p.get('n', '?')})", 100 * p["value"], 100 * p["ci_low"], 100 * p["ci_high"],
                         DELTA_COLORS[improved(p)], f"{100 * p['base']:.1f} \u2192 {100 * p['agfsync']:.1f}%"))
        _forest(ax, rows, "percentage points")
        ax.set_title(TITLES[metric])
    return fig


def element_type_figure(model: str, results: dict[str, dict], folder) -> list[Path]:
    """{model}-element_types.{pdf,png} (nothing without gold or TIFA per element type)."""
    return _write(folder, f"{model}-element_types", lambda: element_type_plot(model, results))


# ----------------------------------------------------------------------------- trajectory


def trajectory_measures(trajectory: dict | None) -> list[str]:
    """What the trajectory's figure shows: proxy, and gold where it has it, else TIFA
    (as agfsync.report.figures.trajectory_section)."""
    points = (trajectory or {}).get("points") or []
    if not points:
        return []
    second = "gold" if "gold" in points[0] else "tifa"
    return [m for m in ("proxy", second) if m in points[0]]


def trajectory_plot(model: str, trajectory: dict | None) -> Figure | None:
    measures = trajectory_measures(trajectory)
    if not measures:
        return None
    points = trajectory["points"]
    fig, axes = _grid(len(measures), 2, 3.3, 2.5, f"{model}: along training, mean with 95% CI")
    steps = [p["step"] for p in points]
    for ax, (i, measure) in zip(axes, enumerate(measures)):
        label, scale = MEASURE_AXES[measure]
        color = (AGFSYNC_COLOR, "#e67700")[i % 2]
        means = [p[measure]["mean"] * scale for p in points]
        lows = [p[measure]["ci_low"] * scale for p in points]
        highs = [p[measure]["ci_high"] * scale for p in points]
        ax.fill_between(steps, lows, highs, color=color, alpha=0.15, linewidth=0)
        ax.errorbar(steps, means, yerr=[[m - lo for m, lo in zip(means, lows)], [h - m for m, h in zip(means, highs)]],
                    fmt="-o", color=color, ecolor=color, capsize=3, markersize=4, elinewidth=1.2)
        ax.set_ylim(*data_limits(min(lows), max(highs), percent=scale == 100.0))
        ax.set_xlabel("training step (0 = base model)")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0].capitalize())
    return fig


def trajectory_figure(model: str, trajectory: dict | None, folder) -> list[Path]:
    """{model}-trajectory.{pdf,png} (nothing without a trajectory)."""
    return _write(folder, f"{model}-trajectory", lambda: trajectory_plot(model, trajectory))


# ----------------------------------------------------------------------------- all of a model


def write_figures(model: str, results: dict[str, dict], trajectory: dict | None, folder) -> dict[str, list[Path]]:
    """Every figure of one model into folder (created): kind -> [pdf, png], kinds with nothing
    to draw left out."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    written = {"values": values_figure(model, results, folder),
               "differences": metric_figure(model, results, folder),
               "element_types": element_type_figure(model, results, folder),
               "trajectory": trajectory_figure(model, trajectory, folder)}
    return {kind: paths for kind, paths in written.items() if paths}
