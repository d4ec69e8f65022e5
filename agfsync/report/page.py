"""results/report.html (rule report): one self-contained page (inline SVG charts and
base64 images, no external requests) per run of the workflow.

Sections, per model: a results table like the paper's (base vs AGFSync per metric, the
difference, whether it improved), bar charts per metric, the Diffusion-DPO training
curves (loss, implicit accuracy, reward margin), preference-data statistics (score
distributions of the candidates, best-worst margins, winner vs loser means), and image
grids: base vs AGFSync for the same prompt and seed, and winner vs loser of training pairs.
Pure: reads the result files, metrics.jsonl, pairs files and shards; no torch. Which files:
the caller says (agfsync.core.dag.report_paths, from agfsync.core.layout); a missing file
leaves its section with a note.
"""

from __future__ import annotations

import base64
import io
import json
from html import escape
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from agfsync.core import layout
from agfsync.core.benchmarks import METRICS, NAMES
from agfsync.core.io import read_json, read_jsonl, write_text
from agfsync.core.shards import Shard
from agfsync.report import svg

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

TITLES = {"tifa": "TIFA", "clipscore": "CLIP score", "aesthetic": "Aesthetic", "hpsv2": "HPS v2",
          "mjhq_fid": "MJHQ-30K FID", "judge": "VLM judge win rate"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:2px solid #eee;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}
th{background:#f6f6f6}td:first-child,th:first-child,td.left{text-align:left}
.up{color:#2b8a3e;font-weight:600}.down{color:#c92a2a;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:14px}
figure{margin:0;border:1px solid #eee;padding:6px;background:#fafafa}figcaption{font-size:12px;color:#444;margin-top:4px}
.pair{display:flex;gap:6px}.pair div{text-align:center;font-size:12px}
.pair img{width:128px;height:128px;object-fit:contain;image-rendering:pixelated;background:#fff}
.note{color:#666;font-size:13px}code{background:#f3f3f3;padding:1px 4px}
"""


def image_data_url(image, size: int = 256) -> str:
    image = image.convert("RGB")
    if max(image.size) > size:
        image = image.copy()
        image.thumbnail((size, size))
    buffer = io.BytesIO()
    if max(image.size) <= 128:
        image.save(buffer, format="PNG")
        kind = "png"
    else:
        image.save(buffer, format="JPEG", quality=85)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def results_table(model: str, results: dict[str, dict]) -> str:
    rows = []
    for metric in METRICS:
        result = results.get(metric)
        if result is None:
            continue
        base, tuned = result["variants"]["base"]["value"], result["variants"]["agfsync"]["value"]
        diff = result["difference"]["value"]
        better = diff > 0 if result["higher_is_better"] else diff < 0
        css = "up" if better else ("down" if diff != 0 else "")
        arrow = "&uarr;" if result["higher_is_better"] else "&darr;"
        bench = result["benchmark"]
        label = bench["name"] if bench["version"] in bench["name"] else f"{bench['name']} {bench['version']}"
        rows.append(f"<tr><td>{TITLES[metric]} {arrow}</td><td class=\"left\">{escape(label)}</td><td>{_num(base)}</td>"
                    f"<td>{_num(tuned)}</td>"
                    f"<td class=\"{css}\">{diff:+.4g}</td><td>{result['count']['prompts']}</td></tr>")
    if not rows:
        return "<p class=\"note\">No evaluation results for this model.</p>"
    return (f"<table id=\"results-{model}\"><tr><th>Metric</th><th>Benchmark</th><th>Base</th><th>AGFSync</th>"
            f"<th>&Delta;</th><th>Prompts</th></tr>{''.join(rows)}</table>")


def detail_tables(results: dict[str, dict]) -> str:
    out = []
    hps = results.get("hpsv2")
    if hps:
        styles = hps["variants"]["base"]["details"]["styles"]
        cells = "".join(f"<tr><td>{escape(s)}</td><td>{_num(styles[s]['mean'], 2)}</td>"
                        f"<td>{_num(hps['variants']['agfsync']['details']['styles'][s]['mean'], 2)}</td></tr>" for s in styles)
        out.append(f"<h4>HPS v2 per style ({escape(hps['benchmark']['version'])})</h4><table><tr><th>Style</th>"
                   f"<th>Base</th><th>AGFSync</th></tr>{cells}</table>")
    tifa = results.get("tifa")
    if tifa:
        types = tifa["variants"]["base"]["details"]["by_element_type"]
        cells = "".join(f"<tr><td>{escape(t)}</td><td>{_num(types[t]['accuracy'])}</td>"
                        f"<td>{_num(tifa['variants']['agfsync']['details']['by_element_type'][t]['accuracy'])}</td>"
                        f"<td>{types[t]['num_questions']}</td></tr>" for t in types)
        out.append(f"<h4>TIFA accuracy by element type</h4><table><tr><th>Element type</th><th>Base</th>"
                   f"<th>AGFSync</th><th>Questions</th></tr>{cells}</table>")
    fid = results.get("mjhq_fid")
    if fid:
        cats = fid["variants"]["base"]["details"]["by_category"]
        cells = "".join(f"<tr><td>{escape(c)}</td><td>{cats[c]['fid']:.4g}</td>"
                        f"<td>{fid['variants']['agfsync']['details']['by_category'][c]['fid']:.4g}</td></tr>"
                        for c in cats)
        out.append(f"<h4>MJHQ-30K FID per category</h4><table><tr><th>Category</th><th>Base</th><th>AGFSync</th>"
                   f"</tr>{cells}</table><p class=\"note\">{escape(json.dumps(fid['implementation'], ensure_ascii=False))}</p>")
    judge = results.get("judge")
    if judge:
        j = judge["judge"]
        cells = "".join(f"<tr><td>{o}</td><td>{j['counts'][o]}</td><td>{_num(j[o]['rate'])}</td>"
                        f"<td>[{_num(j[o]['ci'][0])}, {_num(j[o]['ci'][1])}]</td></tr>" for o in ("win", "tie", "loss"))
        out.append(f"<h4>VLM judge ({escape(judge['implementation']['model'])}): AGFSync vs base</h4><table><tr>"
                   f"<th>AGFSync</th><th>Pairs</th><th>Rate</th><th>{int(j['confidence'] * 100)}% CI (Wilson)</th></tr>"
                   f"{cells}</table><p class=\"note\">{j['skipped']} pair(s) skipped (invalid or failed answers).</p>")
    return "".join(out)


def training_section(model: str, path: Path, summary_path: Path) -> str:
    if not path.exists():
        return "<p class=\"note\">No training metrics.</p>"
    rows = read_jsonl(path)
    charts = [svg.line_chart("DPO loss", {"loss": [(r["step"], r["loss"]) for r in rows]}),
              svg.line_chart("Implicit accuracy", {"accuracy": [(r["step"], r["implicit_acc"]) for r in rows]}),
              svg.line_chart("Reward margin", {"margin": [(r["step"], r["reward_margin"]) for r in rows]}),
              svg.line_chart("Learning rate", {"lr": [(r["step"], r["lr"]) for r in rows]})]
    note = ""
    if summary_path.exists():
        s = read_json(summary_path)
        note = (f"<p class=\"note\">{s['steps']} steps, global batch {s['global_batch']}, {s['processes']} process(es), "
                f"ZeRO {s['zero_stage']}, {escape(s['optimizer'])}, loss {escape(s['loss'])}, "
                f"{s['wall_seconds']:.1f} s.</p>")
    return f"<div class=\"charts\" id=\"training-{model}\">{''.join(charts)}</div>{note}"


def preference_section(model: str, path: Path) -> str:
    if not path.exists():
        return "<p class=\"note\">No preference data.</p>"
    s = read_json(path)
    charts = [svg.histogram(f"{name} score of candidates", s["scores"][name]["histogram"]["edges"],
                            s["scores"][name]["histogram"]["counts"]) for name in ("total", "vqa", "clip", "aesthetic")]
    charts.append(svg.histogram("best - worst margin", s["margin"]["histogram"]["edges"], s["margin"]["histogram"]["counts"],
                                color="#2b8a3e"))
    means = "".join(f"<tr><td>{k}</td><td>{_num(s['winner_mean'][k], 2)}</td><td>{_num(s['loser_mean'][k], 2)}</td></tr>"
                    for k in ("vqa", "clip", "aesthetic", "total"))
    dropped = ", ".join(f"{k}: {v}" for k, v in s["dropped"].items())
    return (f"<p>{s['num_pairs']} pairs from {s['num_prompts_scored']} scored prompts (dropped: {dropped}); "
            f"weights {escape(json.dumps(s['weights']))}.</p><div class=\"charts\" id=\"preference-{model}\">"
            f"{''.join(charts)}</div><table><tr><th>Mean score</th><th>Winner</th><th>Loser</th></tr>{means}</table>")


def eval_grid(model: str, shards: dict[str, dict[str, Path]], per_bench: int) -> str:
    """Image pairs from one evaluation shard per benchmark: shards = {bench: {variant: path}}."""
    figures = []
    for bench, paths in shards.items():
        if not all(p.exists() for p in paths.values()):
            continue
        with Shard(paths["base"]) as base, Shard(paths["agfsync"]) as tuned:
            tuned_rows = {r["prompt_id"]: r for r in tuned.rows}
            for row in base.rows[:per_bench]:
                other = tuned_rows.get(row["prompt_id"])
                if other is None:
                    continue
                figures.append(
                    f"<figure><div class=\"pair\"><div><img alt=\"base\" src=\"{image_data_url(base.image(row))}\">"
                    f"<br>Base</div><div><img alt=\"agfsync\" src=\"{image_data_url(tuned.image(other))}\"><br>AGFSync"
                    f"</div></div><figcaption><b>{escape(NAMES[bench])}</b> {escape(row['prompt_id'])}, seed "
                    f"{row['seed']}: {escape(row['prompt'])}</figcaption></figure>")
    if not figures:
        return "<p class=\"note\">No evaluation images.</p>"
    return f"<div class=\"grid\" id=\"eval-images-{model}\">{''.join(figures)}</div>"


def pairs_grid(model: str, path: Path, count: int) -> str:
    if not path.exists():
        return "<p class=\"note\">No training pairs.</p>"
    figures = []
    for pair in read_jsonl(path)[:count]:
        cells = []
        for side in ("winner", "loser"):
            item = pair[side]
            with Shard(item["shard"]) as shard:
                image = shard.image({"prompt_id": pair["prompt_id"], "candidate": item["candidate"], "image": item["image"]})
            cells.append(f"<div><img alt=\"{side}\" src=\"{image_data_url(image)}\"><br>{side} "
                         f"{item['total']:.1f}</div>")
        figures.append(f"<figure><div class=\"pair\">{''.join(cells)}</div><figcaption>{escape(pair['prompt'])} "
                       f"(margin {pair['margin']:.2f})</figcaption></figure>")
    return f"<div class=\"grid\" id=\"pairs-images-{model}\">{''.join(figures)}</div>"


def run(settings: Settings, inputs: Mapping, outputs: Mapping, *, paths: dict, config_hash: str) -> str:
    """Rule report: the page into outputs["report"] from the files `paths` names per model
    (agfsync.core.dag.report_paths; the rule's inputs are the same files)."""
    return build_report(settings, outputs["report"], paths, config_hash=config_hash)


def build_report(settings: Settings, out_path, paths: dict, *, config_hash: str = "", grid: int = 4) -> str:
    """The page over the run models of `settings`. paths: per model, the files it reads, as
    agfsync.core.dag.report_paths gives them (rebased(...) moves them under another root)."""
    models = list(settings.run_models)
    sections, summary_rows = [], []
    for model in models:
        files = paths[model]
        metric_paths = {m: Path(p) for m, p in files["metrics"].items()}
        eval_shards = {b: {v: Path(p) for v, p in by_variant.items()} for b, by_variant in files["eval_shards"].items()}
        results = {m: read_json(p) for m, p in metric_paths.items() if p.exists()}
        bars = [svg.bar_pair(TITLES[m], r["variants"]["base"]["value"], r["variants"]["agfsync"]["value"],
                             lower_is_better=not r["higher_is_better"]) for m, r in results.items()]
        for m, r in results.items():
            summary_rows.append((model, m, r))
        sections.append(
            f"<section id=\"model-{model}\"><h2>{escape(model)} <small class=\"note\">"
            f"{escape(settings.models[model].pretrained)}</small></h2>"
            f"<h3>Results</h3>{results_table(model, results)}<div class=\"charts\" id=\"charts-{model}\">{''.join(bars)}</div>"
            f"{detail_tables(results)}"
            f"<h3>Training curves</h3>{training_section(model, Path(files['train_metrics']), Path(files['train_summary']))}"
            f"<h3>Preference data</h3>{preference_section(model, Path(files['pairs_summary']))}"
            f"<h3>Base vs AGFSync (same prompt and seed)</h3>{eval_grid(model, eval_shards, grid)}"
            f"<h3>Training pairs: winner vs loser</h3>{pairs_grid(model, Path(files['pairs']), grid)}</section>")
    improved = sum(1 for _, _, r in summary_rows
                   if (r["difference"]["value"] > 0) == r["higher_is_better"] and r["difference"]["value"] != 0)
    tiny = " Tiny random models (demo): the numbers exercise the pipeline and mean nothing." if settings.tiny_models.enabled else ""
    html = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>AGFSync report</title>"
        f"<style>{CSS}</style></head><body><h1>AGFSync: base vs fine-tuned</h1>"
        f"<p id=\"summary\">Models: {', '.join(escape(m) for m in models)}. AGFSync improves {improved} of "
        f"{len(summary_rows)} model-metric results. Config hash <code>{escape(config_hash)}</code>.{tiny}</p>"
        f"{''.join(sections)}"
        "<p class=\"note\">Generated by agfsync (rule report). Results: results/&lt;model&gt;/&lt;metric&gt;.json.</p>"
        "</body></html>\n"
    )
    write_text(out_path, html)
    return html


def rebased(value, root):
    """report_paths' files, moved under another results directory (None: as they are)."""
    if root is None:
        return value
    if isinstance(value, dict):
        return {key: rebased(item, root) for key, item in value.items()}
    return layout.under(root, value)
