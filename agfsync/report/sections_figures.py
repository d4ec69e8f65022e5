"""The report's paper figures on the page, the cross-model table in the layout of the paper's
tables, and the navigation (pure HTML; the figures themselves: agfsync.report.plots).

Each figure is written as PDF and PNG into the figures folder next to the page
(results/figures/ for results/report.html) and shown inline as its PNG (a base64 data URI:
the page stays self-contained), with relative links to both files. The differences figure
replaces the SVG forest plot and the trajectory figure the SVG chart of proxy and gold along
training, one for one; the values and per-element-type figures are new.
"""

from __future__ import annotations

import base64
import os
import re
from html import escape
from pathlib import Path

from agfsync.report import plots
from agfsync.report.verdicts import DISPLAY, TITLES, VERDICT_CLASS, improved, value_text

CSS = """
img.plot{width:auto;height:auto;max-width:100%;background:#fff}figure.plot{max-width:100%}
table.paper td{white-space:nowrap}table.paper tr.tuned td{border-bottom:2px solid #ccc}
nav#toc{background:#f6f6f6;padding:6px 10px;font-size:14px}nav#toc a{margin-right:6px}
p.model-nav{font-size:13px}p.model-nav a{margin-right:12px}
"""
CAPTIONS = {
    "values": "Base vs AGFSync per metric: the mean with its 95% bootstrap CI over prompts (FID: no CI). "
              "Each axis starts where its data does.",
    "differences": "AGFSync minus base, with the 95% paired bootstrap CI. Accuracies in percentage points, every "
                   "other metric in its own units; green: measurably better, red: measurably worse, gray: the CI "
                   "holds zero.",
    "element_types": "Per element type: AGFSync minus base in percentage points with the paired 95% CI; "
                     "base &rarr; AGFSync beside each row.",
    "trajectory": "Proxy reward and gold (else TIFA) along training: the mean over the same prompts and seeds at "
                  "each evaluated step, with its 95% CI; step 0 is the base model.",
}


def figures_folder(out_path) -> Path:
    """Where the figures of a page go: figures/ beside it (results/figures for results/report.html)."""
    return Path(out_path).parent / "figures"


def _link(path: Path, page_dir: Path) -> str:
    return escape(Path(os.path.relpath(path, page_dir)).as_posix())


def figure_html(model: str, kind: str, paths: list[Path], page_dir: Path) -> str:
    """One figure: its PNG inline, its caption, links to the PDF and PNG files."""
    by_ext = {p.suffix.lstrip("."): p for p in paths}
    data = base64.b64encode(by_ext["png"].read_bytes()).decode("ascii")
    links = " &middot; ".join(f'<a href="{_link(by_ext[ext], page_dir)}">{ext.upper()}</a>'
                              for ext in plots.FORMATS if ext in by_ext)
    return (f'<figure class="plot" id="fig-{kind}-{escape(model)}"><img class="plot" alt="{escape(model)}: '
            f'{escape(kind.replace("_", " "))}" src="data:image/png;base64,{data}"><figcaption>{CAPTIONS[kind]} '
            f'<span class="note">({links})</span></figcaption></figure>')


def model_figures(model: str, results: dict, trajectory: dict | None, folder, page_dir) -> dict[str, str]:
    """Write one model's figures into folder; kind -> its HTML (kinds with nothing to draw left out)."""
    written = plots.write_figures(model, results, trajectory, folder)
    return {kind: figure_html(model, kind, paths, Path(page_dir)) for kind, paths in written.items()}


def swap_chart(html: str, ident: str, replacement: str) -> str:
    """`html` with the SVG chart block <div class="charts" id="ident">...</div> (SVG only,
    no nested div: agfsync.report.svg) replaced by `replacement` inside the same div; as it is
    when there is none or no replacement."""
    if not replacement:
        return html
    pattern = re.compile(rf'<div class="charts" id="{re.escape(ident)}">.*?</div>', re.S)
    return pattern.sub(lambda _: f'<div class="charts" id="{ident}">{replacement}</div>', html, count=1)


def figures_note(figs: dict[str, dict[str, str]], folder: Path, page_dir: Path) -> str:
    """Where the figures are, or why there are none."""
    count = sum(len(kinds) for kinds in figs.values())
    if not count:
        return ('<p class="note" id="figures-note">No figures: no metric files or trajectory yet (they are drawn '
                'from results/&lt;model&gt;/&lt;metric&gt;.json).</p>')
    where = _link(folder, page_dir)
    return (f'<p class="note" id="figures-note">{count} figures, each as PDF and PNG in <a href="{where}/">{where}/</a> '
            '(matplotlib; the PNGs are the ones on this page).</p>')


# ----------------------------------------------------------------------------- the paper's table


def _cell(metric: str, variant: dict, cls: str = "") -> str:
    ci = variant.get("ci") or {}
    text = value_text(metric, variant["value"])
    if "ci_low" in ci:
        text += f'<br><span class="ci">[{value_text(metric, ci["ci_low"])}, {value_text(metric, ci["ci_high"])}]</span>'
    return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"


def paper_table(by_model: dict[str, dict[str, dict]]) -> str:
    """Rows as in the paper's tables: each model, then +AGFSync; columns the metrics (the VLM
    judge, a direct comparison, stays in each model's section); values with their 95% CIs."""
    metrics = [m for m in DISPLAY if m not in plots.NO_VALUES and any(m in r for r in by_model.values())]
    if not metrics:
        return ""
    arrows = {m: next(("&uarr;" if r[m]["higher_is_better"] else "&darr;") for r in by_model.values() if m in r)
              for m in metrics}
    head = "".join(f"<th>{escape(TITLES[m])} {arrows[m]}</th>" for m in metrics)
    rows = []
    for model, results in by_model.items():
        base = "".join(_cell(m, results[m]["variants"]["base"]) if m in results else "<td>-</td>" for m in metrics)
        tuned = "".join(_cell(m, results[m]["variants"]["agfsync"], VERDICT_CLASS[improved(
            results[m]["difference"], results[m]["higher_is_better"])]) if m in results else "<td>-</td>"
            for m in metrics)
        rows.append(f'<tr><td class="left"><a href="#model-{escape(model)}">{escape(model)}</a></td>{base}</tr>'
                    f'<tr class="tuned"><td class="left">+AGFSync</td>{tuned}</tr>')
    return (f'<h2 id="paper-table">All models, as the paper\'s tables</h2><table class="paper" id="paper-table-body">'
            f'<tr><th>Model</th>{head}</tr>{"".join(rows)}</table><p class="note">Each model, then the same model '
            'tuned with AGFSync; 95% bootstrap CIs over prompts in brackets (FID: none). +AGFSync in green where the '
            'paired CI of the difference is above zero for a metric where higher is better (below where lower '
            'is), red the other way. &uarr; higher is better, &darr; lower is better. The VLM judge compares the '
            'two directly: see each model.</p>')


# ----------------------------------------------------------------------------- navigation


def toc(models: list[str]) -> str:
    """Contents at the top of the page: the tables, each model and its parts, compute, provenance."""
    per_model = " &middot; ".join(
        f'<a href="#model-{m}"><b>{m}</b></a> (<a href="#results-head-{m}">results</a>, '
        f'<a href="#figures-head-{m}">figures</a>, <a href="#trajectory-head-{m}">training</a>, '
        f'<a href="#images-head-{m}">images</a>)' for m in map(escape, models))
    return (f'<nav id="toc"><b>Contents:</b> <a href="#all-models">all models</a> '
            f'<a href="#paper-table">paper table</a> &middot; Models: {per_model or "none"} &middot; '
            f'<a href="#compute">compute</a> <a href="#provenance">provenance</a></nav>')


def model_nav(models: list[str], index: int) -> str:
    """Previous model, contents, next model: at the top of each model's section."""
    links = []
    if index > 0:
        links.append(f'<a href="#model-{escape(models[index - 1])}">&larr; {escape(models[index - 1])}</a>')
    links.append('<a href="#toc">&uarr; contents</a>')
    if index + 1 < len(models):
        links.append(f'<a href="#model-{escape(models[index + 1])}">{escape(models[index + 1])} &rarr;</a>')
    return f'<p class="model-nav" id="nav-{escape(models[index])}">{"".join(links)}</p>'
