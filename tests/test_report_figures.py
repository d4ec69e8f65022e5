"""The report's paper figures (agfsync.report.plots, agfsync.report.sections_figures): PDF and
PNG files that are valid and byte-identical on a rebuild (here and in a fresh process), axes
that start where the data does, error bars that are the result files' CIs, the PNGs inline
on the page with links to the PDFs, the cross-model table and the navigation, and a page
without any metric file. Synthetic result files in tmp_path; no torch, no workflow run."""

from __future__ import annotations

import base64
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import settings
from PIL import Image

from agfsync.core import dag
from agfsync.core.config import load_config
from agfsync.core.io import write_json
from agfsync.report import page, plots, sections_figures
from conftest import REPO

PNG_HEADER, PDF_HEADER = b"\x89PNG\r\n\x1a\n", b"%PDF-"
TYPES = ("color", "counting", "shape", "spatial")


def ci(value, low, high, n=200, **extra) -> dict:
    return {"value": value, "ci_low": low, "ci_high": high, "level": 0.95, "resamples": 10000, "seed": 3, "n": n,
            **extra}


def result(metric, base, tuned, diff, *, spread, facets=None, higher_is_better=True) -> dict:
    """A result file as agfsync.stages.metrics writes it (the parts the report reads); each
    variant's mean with a CI of +-spread."""
    variants = {v: {"value": x, "details": {}, "ci": {"ci_low": x - spread, "ci_high": x + spread, "level": 0.95,
                                                      "resamples": 10000, "seed": 1, "n": 200}}
                for v, x in (("base", base), ("agfsync", tuned))}
    return {"metric": metric, "model": "world", "pretrained": "data/world/models/sd1",
            "benchmark": {"name": "TIFA", "version": "world-v1"}, "higher_is_better": higher_is_better,
            "variants": variants, "difference": {**diff, **(facets or {})}, "count": {"prompts": 200, "images": 400},
            "implementation": {}, "config_hash": "ab" * 8}


RESULTS = {
    "gold": result("gold", 0.521, 0.613, ci(0.092, 0.068, 0.115), spread=0.021, facets={
        "by_element_type": {t: ci(0.04 * i - 0.03, 0.04 * i - 0.08, 0.04 * i + 0.02, n=50 + i, base=0.4,
                                  agfsync=0.37 + 0.04 * i) for i, t in enumerate(TYPES)}}),
    "proxy": result("proxy", 40.2, 44.3, ci(4.1, 2.0, 6.2), spread=0.8),
    "tifa": result("tifa", 0.30, 0.31, ci(0.01, -0.01, 0.03), spread=0.02, facets={
        "by_element_type": {t: ci(0.0, -0.02, 0.02, n=60, base=0.3, agfsync=0.3) for t in TYPES}}),
    "clipscore": result("clipscore", 25.0, 24.0, ci(-1.0, -1.5, -0.5), spread=0.3),
}
TRAJECTORY = {"points": [{"step": s, "fraction": s / 300, "n": 100,
                          "proxy": {"mean": 40 + s / 100, "ci_low": 39 + s / 100, "ci_high": 41 + s / 100,
                                    "delta": s / 100, "delta_ci_low": s / 100 - 1, "delta_ci_high": s / 100 + 1},
                          "gold": {"mean": 0.5 - s / 7500, "ci_low": 0.45 - s / 7500, "ci_high": 0.55 - s / 7500,
                                   "delta": -s / 7500, "delta_ci_low": -s / 7500 - 0.03, "delta_ci_high": -s / 7500 + 0.03}}
                         for s in (0, 100, 200, 300)], "warning": None}


@pytest.fixture(scope="module")
def world_config() -> dict:
    return load_config(REPO / "config" / "demo.yaml")


def _errorbars(ax) -> list[np.ndarray]:
    """The segments of every error bar of the axes, container by container."""
    return [np.asarray(container.lines[2][0].get_segments()) for container in ax.containers]


# ----------------------------------------------------------------------------- files


def test_report_figures_are_valid_pdf_and_png_and_identical_on_a_rebuild(tmp_path):
    first = plots.write_figures("world", RESULTS, TRAJECTORY, tmp_path / "a")
    assert set(first) == {"values", "differences", "element_types", "trajectory"}
    for kind, paths in first.items():
        assert [p.name for p in paths] == [f"world-{kind}.pdf", f"world-{kind}.png"]
        pdf, png = (p.read_bytes() for p in paths)
        assert pdf.startswith(PDF_HEADER) and pdf.rstrip().endswith(b"%%EOF") and b"CreationDate" not in pdf
        assert png.startswith(PNG_HEADER) and b"Software" not in png
        with Image.open(paths[1]) as image:
            assert round(image.info["dpi"][0]) == plots.DPI and image.size[0] > 600
    before = {p: p.read_bytes() for paths in first.values() for p in paths}
    again = plots.write_figures("world", RESULTS, TRAJECTORY, tmp_path / "a")  # over the same files
    assert again == first and {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for ps in first.values() for p in ps)
    # a fresh process (its own font cache and rc state) writes the same bytes
    write_json(tmp_path / "results.json", RESULTS)
    code = ("import json, sys; from agfsync.report import plots; "
            "plots.metric_figure('world', json.load(open(sys.argv[1])), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "results.json"), str(tmp_path / "c")], check=True)
    for ext in ("pdf", "png"):
        assert (tmp_path / "c" / f"world-differences.{ext}").read_bytes() == \
            (tmp_path / "a" / f"world-differences.{ext}").read_bytes()


def test_report_figures_nothing_to_draw_writes_nothing(tmp_path):
    assert plots.write_figures("world", {}, None, tmp_path / "f") == {}
    assert list((tmp_path / "f").iterdir()) == []
    judge_only = {"judge": result("judge", 0.2, 0.5, {"value": 0.3}, spread=0.0)}
    assert plots.write_figures("world", judge_only, {"points": []}, tmp_path / "g") == {}


# ----------------------------------------------------------------------------- axes


def test_report_figures_value_axes_start_where_the_data_does():
    assert plots.data_limits(52.0, 61.0)[0] > 50.0  # far from 0: from the data
    assert plots.data_limits(0.05, 0.3)[0] == 0.0  # near 0: from 0
    assert plots.data_limits(95.0, 99.9, percent=True)[1] == 100.0
    near_zero = result("clipscore", 0.3, 0.6, ci(0.3, 0.1, 0.5), spread=0.15)
    with plots.style():
        fig = plots.values_plot("world", {**RESULTS, "clipscore": near_zero})
    axes = {ax.get_title().replace("\n", " ")[:-2]: ax for ax in fig.axes if ax.get_visible()}
    assert list(axes) == ["Gold accuracy (world oracle)", "Proxy (stage-3 total)", "TIFA (VQA)", "CLIP score"]
    low, high = axes["Gold accuracy (world oracle)"].get_ylim()  # 50.0-63.4 %: not from 0
    assert 45.0 < low <= 50.0 and 63.4 <= high < 70.0
    low, high = axes["Proxy (stage-3 total)"].get_ylim()  # 39.4-45.1
    assert 37.0 < low <= 39.4 and 45.1 <= high < 48.0
    assert axes["CLIP score"].get_ylim()[0] == 0.0  # 0.15-0.75: near 0, from 0
    for ax in axes.values():
        assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "AGFSync"]


# ----------------------------------------------------------------------------- error bars


def test_report_figures_error_bars_are_the_cis():
    with plots.style():
        diffs = plots.differences_plot("world", RESULTS)
        values = plots.values_plot("world", RESULTS)
        parts = plots.element_type_plot("world", RESULTS)
        along = plots.trajectory_plot("world", TRAJECTORY)
    # differences: accuracies in one panel (percentage points), every other metric its own
    accuracy, proxy, clip = diffs.axes
    assert [t.get_text() for t in accuracy.get_yticklabels()] == ["Gold accuracy (world oracle) \u2191",
                                                                   "TIFA (VQA) \u2191"]
    expected = {accuracy: [(6.8, 11.5), (-1.0, 3.0)], proxy: [(2.0, 6.2)], clip: [(-1.5, -0.5)]}
    for ax, cis in expected.items():
        segments = _errorbars(ax)
        assert len(segments) == len(cis)
        for row, (segment, (low, high)) in enumerate(zip(segments, cis)):
            np.testing.assert_allclose(segment, [[[low, row], [high, row]]], atol=1e-9)
        assert ax.get_xlim()[0] < min(0.0, *(c[0] for c in cis)) and ax.get_xlim()[1] > max(0.0, *(c[1] for c in cis))
        assert any(np.allclose(line.get_xdata(), 0.0) for line in ax.get_lines())  # the zero line
    # values: each variant's mean with variants.<v>.ci
    gold = values.axes[0]
    for x, (segment, variant) in enumerate(zip(_errorbars(gold), ("base", "agfsync"))):
        c = RESULTS["gold"]["variants"][variant]["ci"]
        np.testing.assert_allclose(segment, [[[x, 100 * c["ci_low"]], [x, 100 * c["ci_high"]]]], atol=1e-9)
    # per element type: the paired CI of each type, in points, in ELEMENT_ORDER
    gold_parts = parts.axes[0]
    assert gold_parts.get_title() == "Gold accuracy (world oracle)"
    for row, (segment, kind) in enumerate(zip(_errorbars(gold_parts), TYPES)):
        part = RESULTS["gold"]["difference"]["by_element_type"][kind]
        np.testing.assert_allclose(segment, [[[100 * part["ci_low"], row], [100 * part["ci_high"], row]]], atol=1e-9)
    assert [t.get_text() for t in gold_parts.get_yticklabels()] == [f"{t} (n={50 + i})" for i, t in enumerate(TYPES)]
    # trajectory: proxy and gold at every step with their CIs
    proxy_ax, gold_ax = along.axes[:2]
    (segments,) = _errorbars(gold_ax)
    np.testing.assert_allclose(segments, [[[p["step"], 100 * p["gold"]["ci_low"]], [p["step"], 100 * p["gold"]["ci_high"]]]
                                          for p in TRAJECTORY["points"]], atol=1e-9)
    assert proxy_ax.get_ylim()[0] > 30.0  # 39-44: not from 0


# ----------------------------------------------------------------------------- the page


def _page(world_config, tmp_path, results, trajectory=None):
    root = tmp_path / "results"
    paths = page.rebased(dag.report_paths(world_config)["world"], root)
    for metric, value in results.items():
        write_json(paths["metrics"][metric], value)
    if trajectory:
        write_json(paths["trajectory"], trajectory)
    out = root / "report.html"
    return page.build_report(settings(world_config, "report"), out, {"world": paths}), root


def test_report_figures_the_page_embeds_the_pngs_and_links_the_pdfs(world_config, tmp_path):
    html, root = _page(world_config, tmp_path, RESULTS, TRAJECTORY)
    folder = root / "figures"
    assert folder == sections_figures.figures_folder(root / "report.html")
    for kind in ("values", "differences", "element_types", "trajectory"):
        figure = re.search(rf'<figure class="plot" id="fig-{kind}-world">.*?</figure>', html).group(0)
        encoded = re.search(r'src="data:image/png;base64,([^"]+)"', figure).group(1)
        assert base64.b64decode(encoded) == (folder / f"world-{kind}.png").read_bytes()
        assert f'href="figures/world-{kind}.pdf"' in figure and (folder / f"world-{kind}.pdf").exists()
    # the differences figure stands for the SVG forest plot, the trajectory figure for its SVG chart
    for ident, kind in (("charts-world", "differences"), ("trajectory-world", "trajectory")):
        block = html[html.index(f'<div class="charts" id="{ident}">'):]
        block = block[:block.index("</div>")]
        assert f'id="fig-{kind}-world"' in block and "<svg" not in block
    assert 'id="figures-note"' in html and "4 figures" in html
    # the cross-model table, as the paper's: the model's line, then +AGFSync, values with CIs
    table = html[html.index('id="paper-table-body"'):]
    table = table[:table.index("</table>")]
    assert '<td class="left"><a href="#model-world">world</a></td><td>52.1%<br><span class="ci">[50.0%, 54.2%]' in table
    assert '<tr class="tuned"><td class="left">+AGFSync</td><td class="up">61.3%' in table
    assert '<td class="down">24.00' in table and '<td class="flat">31.0%' in table
    # navigation: contents at the top, links from each model's section
    assert html.index('<nav id="toc">') < html.index('id="summary"')
    for anchor in ("all-models", "paper-table", "model-world", "results-head-world", "figures-head-world",
                   "trajectory-head-world", "images-head-world", "compute", "provenance"):
        assert f'href="#{anchor}"' in html and f'id="{anchor}"' in html, anchor
    assert '<p class="model-nav" id="nav-world"><a href="#toc">&uarr; contents</a></p>' in html
    nav = sections_figures.model_nav(["sd15", "sdxl", "world"], 1)
    assert 'href="#model-sd15">&larr; sd15<' in nav and 'href="#model-world">world &rarr;<' in nav


def test_report_figures_rule_folder_and_a_page_without_metric_files(world_config, tmp_path):
    root = tmp_path / "results"
    paths = page.rebased(dag.report_paths(world_config)["world"], root)
    outputs = {"report": root / "report.html", "tsv": root / "metrics.tsv", "figures": tmp_path / "figs"}
    html = page.run(settings(world_config, "report"), {}, outputs, paths={"world": paths}, config_hash="0" * 16)
    assert (tmp_path / "figs").is_dir() and list((tmp_path / "figs").iterdir()) == []
    assert "No figures: no metric files or trajectory yet" in html and "No figures for this model" in html
    assert "data:image/png" not in html and 'id="paper-table"' not in html
    assert sections_figures.paper_table({"world": {}}) == ""
