"""results/metrics.tsv (rule report): every reported number of the result files
results/{model}/{metric}.json in one long table (pure: reads JSON, writes text; no torch).

    pd.read_csv("results/metrics.tsv", sep="\\t")

Columns, tab-separated, with a header row: model, benchmark, metric, variant, value, ci_low,
ci_high, n.
  benchmark  the benchmark key the metric is computed on: tifa, hpsv2, mjhq (the judge: the
             judged benchmark's key)
  metric     the result file's metric (tifa, clipscore, aesthetic, proxy, gold, hpsv2,
             mjhq_fid, judge) for its headline value; a breakdown is `<metric>/<facet>=<name>`:
               tifa, gold   element_type=<t>, source=<TIFA group: coco ...; world category>,
                            split=<seen|unseen> (world benchmark): per prompt the accuracy over
                            that part, averaged over the n prompts that have it (the paired CI's
                            quantity); element_type_pooled=<t>: accuracy over all questions of
                            the type (TIFA's definition), n = questions
               clipscore, aesthetic, proxy   group=<TIFA group>, n = images
               hpsv2        style=<style>, n = images
               mjhq_fid     category=<category>, n = images; category_mean
             and `<metric>/better_than_base_fraction` (variant delta): the fraction of prompts on
             which AGFSync's image scores higher than the base image. Split a name at the first
             "/" only: a name may hold one (TIFA's element type animal/human).
  variant    base | agfsync | delta (agfsync - base; for the judge: win rate - loss rate, the
             base row being the loss rate and the agfsync row the win rate) | published (the
             number the benchmark's authors published for the same base model, protocol and
             prompts, agfsync.core.published; no CI, n empty)
  value      in the metric's own scale (TIFA and gold accuracies are fractions 0..1; CLIP,
             aesthetic, proxy 0..100; HPS v2 100 x cos; FID)
  ci_low, ci_high  the 95% bootstrap CI (paired over prompts for delta rows, of the mean for
             base / agfsync rows; the judge's rates: Wilson); empty where there is none
  n          prompts, unless said otherwise above (judge: pairs judged)
The judge's tie rate, standard deviations, chunk and question counts and the implementation
records stay in the JSON files only.
"""

from __future__ import annotations

from pathlib import Path

from agfsync.core import published
from agfsync.core.benchmarks import METRICS, NAMES, SOURCE
from agfsync.core.io import read_json, write_text

COLUMNS = ("model", "benchmark", "metric", "variant", "value", "ci_low", "ci_high", "n")
FACETS = ("element_type", "source", "split")


def _row(model, bench, metric, variant, value, n, ci=None) -> dict:
    ci = ci or {}
    return {"model": model, "benchmark": bench, "metric": metric, "variant": variant, "value": value,
            "ci_low": ci.get("ci_low"), "ci_high": ci.get("ci_high"), "n": n}


def _benchmark(result: dict) -> str:
    metric = result["metric"]
    if metric in SOURCE:
        return SOURCE[metric]
    name = result["benchmark"]["name"]  # the judge: "VLM judge on <benchmark name>"; a reward: the benchmark's name
    return next((key for key, full in NAMES.items() if name == full or name.endswith(f" on {full}")), name)


def _triple(model, bench, metric, base, tuned, delta, n, cis=(None, None, None)) -> list[dict]:
    return [_row(model, bench, metric, v, value, n, ci)
            for v, value, ci in zip(("base", "agfsync", "delta"), (base, tuned, delta), cis)]


def result_rows(result: dict) -> list[dict]:
    """The rows of one result file."""
    model, metric, bench = result["model"], result["metric"], _benchmark(result)
    base, tuned, diff = result["variants"]["base"], result["variants"]["agfsync"], result["difference"]
    prompts = result["count"]["prompts"]
    if metric == "judge":
        cis = [{"ci_low": v["details"]["ci"][0], "ci_high": v["details"]["ci"][1]} for v in (base, tuned)]
        return _triple(model, bench, metric, base["value"], tuned["value"], diff["value"], prompts, (*cis, None))
    rows = _triple(model, bench, metric, base["value"], tuned["value"], diff["value"], diff.get("n", prompts),
                   (base.get("ci"), tuned.get("ci"), diff if "ci_low" in diff else None))
    b, t = base["details"], tuned["details"]
    for facet in FACETS:
        for name, part in diff.get(f"by_{facet}", {}).items():
            rows += _triple(model, bench, f"{metric}/{facet}={name}", part["base"], part["agfsync"], part["value"],
                            part["n"], (None, None, part))
    if "by_element_type" in b:  # tifa, gold: TIFA's per-type accuracy, over questions
        for name, acc in b["by_element_type"].items():
            rows += _triple(model, bench, f"{metric}/element_type_pooled={name}", acc["accuracy"],
                            t["by_element_type"][name]["accuracy"], diff["by_group"][name], acc["num_questions"])
    breakdowns = {"by_group": ("group", "mean"), "styles": ("style", "mean"), "by_category": ("category", "fid")}
    for key, (facet, field) in breakdowns.items():
        if key in b:
            for name, part in b[key].items():
                rows += _triple(model, bench, f"{metric}/{facet}={name}", part[field], t[key][name][field],
                                diff["by_group"][name], part["num_images"])
    if "category_mean" in b:
        rows += _triple(model, bench, f"{metric}/category_mean", b["category_mean"], t["category_mean"],
                        t["category_mean"] - b["category_mean"], prompts)
    if "better_than_base_fraction" in t:
        rows.append(_row(model, bench, f"{metric}/better_than_base_fraction", "delta",
                         t["better_than_base_fraction"], prompts))
    entry = published.for_result(result)
    for part, value, _ in published.beside(result):
        rows.append(_row(model, bench, published.tsv_name(entry, part), "published", value, None))
    return rows


def metric_rows(results: dict[str, dict[str, dict]]) -> list[dict]:
    """Rows of the result files, per model (in the given order) and metric (METRICS order)."""
    rows = []
    for model, by_metric in results.items():
        for metric in METRICS:
            if metric in by_metric:
                rows += result_rows(by_metric[metric])
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_tsv(rows: list[dict]) -> str:
    lines = ["\t".join(COLUMNS)]
    for row in rows:
        cells = [_cell(row[c]) for c in COLUMNS]
        if any("\t" in c or "\n" in c for c in cells):
            raise ValueError(f"metrics.tsv: a tab or newline in row {row!r}")
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def write_tsv(out_path, metric_paths: dict[str, dict[str, str | Path]]) -> list[dict]:
    """metrics.tsv (written atomically) from the result files `metric_paths[model][metric]`
    (agfsync.core.dag.report_paths' "metrics"); a missing file adds no rows."""
    results = {model: {m: read_json(p) for m, p in paths.items() if Path(p).exists()}
               for model, paths in metric_paths.items()}
    rows = metric_rows(results)
    write_text(out_path, to_tsv(rows))
    return rows
