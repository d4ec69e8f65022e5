"""results/report.html (rule report): one self-contained page (inline SVG charts and
base64 images, no external requests) over the run models, built around the first question
a researcher asks: did it work, and how sure are we?

  top        per model the headline sentence (agfsync.report.verdicts: a change counts only
             where the 95% paired bootstrap CI excludes zero), the reward-hacking warning of
             the trajectory when there is one, what the run is (the miniature world, or tiny
             random models) and a table of every metric of every model
  per model  the run's scale; results table and forest plot of the differences; gold and
             TIFA (VQA) per element type, split and category (agfsync.report.sections_results);
             the paper figures (agfsync.report.plots: PDF and PNG in figures/ beside the page, the
             PNGs inline; agfsync.report.sections_figures, with the cross-model table in the
             layout of the paper's tables and the navigation);
             proxy and gold along training, the training curves, score distributions
             (agfsync.report.figures); base vs AGFSync where accuracy rose and fell most, with
             the verdict on every question, and all N candidates of a few training prompts
             (agfsync.report.grids)
  compute    per model and stage: jobs, wall time and GPU-hours from Snakemake's benchmark
             files, and the totals per stage (agfsync.report.compute; "not measured" without them)
  bottom     provenance: agfsync version, config digests, how the CIs were computed, the code
             states and machines that wrote the result files, compute totals per stage, and
             the hub commit of every model and scorer (download markers)

Pure: reads the files agfsync.core.dag.report_paths names (agfsync.report.data), and, where
they exist, benchmarks/ and the hub download markers (no rule's outputs, so not its inputs);
no torch. A missing file leaves its section with a note.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from agfsync import __version__
from agfsync.core import costs as job_costs
from agfsync.core import layout, provenance as code_provenance
from agfsync.core.io import write_text
from agfsync.report import data as report_data
from agfsync.report import compute, figures, grids, sections_figures, sections_results, table, verdicts

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1240px;color:#222;padding:0 16px;line-height:1.4}
h1{margin-bottom:4px}h2{border-bottom:2px solid #eee;padding-bottom:4px;margin-top:40px}h3{margin-top:28px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f6f6f6}td:first-child,th:first-child,td.left{text-align:left}.ci{color:#666;font-size:12px;white-space:nowrap}
td.up,td.down,td.flat{white-space:nowrap}
.up{color:#2b8a3e;font-weight:600}.down{color:#c92a2a;font-weight:600}.flat{color:#666}
.headline{font-size:17px;background:#f4f8fb;border-left:4px solid #1c7ed6;padding:8px 12px}
.banner{background:#fff9db;border:1px solid #fab005;padding:8px 12px}
.warning{background:#fff5f5;border:2px solid #c92a2a;color:#8f1d1d;padding:10px 14px;margin:10px 0;font-size:16px}
.caution{background:#fff9db;border:2px solid #e67700;color:#7a4100;padding:10px 14px;margin:10px 0;font-size:16px}
.charts{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:14px}
figure{margin:0;border:1px solid #eee;padding:8px;background:#fafafa}figcaption{font-size:13px;color:#333;margin-top:6px}
.pair{display:flex;gap:8px}.pair div{text-align:center;font-size:12px}
img{width:192px;height:192px;object-fit:contain;background:#fff;image-rendering:auto}
table.qa{font-size:12px;margin:6px 0 0}.ok{color:#2b8a3e;font-weight:700}.bad{color:#c92a2a;font-weight:700}
.cands .row{display:grid;grid-template-columns:repeat(4,max-content);gap:8px}.cand{text-align:center;font-size:12px;border:3px solid transparent;padding:2px;width:200px}
.cand.winner{border-color:#2b8a3e}.cand.loser{border-color:#c92a2a}.badge{color:#fff;padding:0 4px;border-radius:3px}
.badge.winner{background:#2b8a3e}.badge.loser{background:#c92a2a}
nav a{margin-right:12px}.note{color:#666;font-size:13px}code{background:#f3f3f3;padding:1px 4px}
"""


def _fmt_int(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "n/a"


def scale_text(settings: Settings, data: report_data.ModelData) -> str:
    """The run's scale, from the files (the config where a file does not say)."""
    n_prompts = (data.prompts_summary or {}).get("num_prompts")
    per_prompt = settings.candidates.num_per_prompt
    pairs = data.pairs_summary or {}
    summary = data.train_summary or {}
    hp = settings.models[data.model].train
    steps, batch = summary.get("steps", hp.steps), summary.get("global_batch", hp.global_batch)
    how = f"LoRA rank {summary['lora_rank']}" if summary.get("lora_rank") else "full UNet"
    evaluated = next((r["count"]["prompts"] for m, r in data.results.items() if m in ("gold", "tifa")),
                     len(data.per_image.get("base", {})) or None)
    held_out = "held-out " if settings.eval.tifa.gold == "world" else ""
    candidates = f"{per_prompt} candidates per prompt" + (
        f" ({n_prompts * per_prompt:,} images)" if isinstance(n_prompts, int) else "")
    dropped = sum((pairs.get("dropped") or {}).values())
    return (f'<p id="scale-{escape(data.model)}"><b>Scale.</b> {_fmt_int(n_prompts)} training prompts, {candidates}, '
            f'{_fmt_int(pairs.get("num_pairs"))} preference pairs ({dropped} prompts dropped); {steps:,} '
            f'Diffusion-DPO steps at a global batch of {batch} pairs ({how}); evaluated on {_fmt_int(evaluated)} '
            f'{held_out}TIFA prompts, one image per model and prompt, the same seeds for both.</p>')


def run_note(settings: Settings) -> str:
    if settings.eval.tifa.gold == "world":
        return ('<p class="banner" id="world-note"><b>This run is the miniature world, not SD 1.5 or SDXL.</b> '
                '64x64 procedural scenes of colored circles, squares and triangles; a text-to-image model, CLIP, '
                'BLIP-2 and an aesthetic head trained on them; and an exact oracle that reads each image back and '
                'answers every TIFA question, the gold standard no real benchmark has. Gold = the oracle\'s accuracy; '
                'proxy = the AI judges\' weighted total, what the preference pairs optimised. The numbers are the '
                'world\'s: see <a href="../docs/world.md">docs/world.md</a> (docs/world.md in the repository).</p>')
    if settings.tiny_models.enabled:
        return ('<p class="banner" id="tiny-note"><b>Tiny random models (demo):</b> the numbers exercise the '
                'pipeline and mean nothing.</p>')
    return ""


def left_out_note(d: report_data.ModelData) -> str:
    """Why a metric of the result files is not on the page (report_data.ModelData.left_out)."""
    if not d.left_out:
        return ""
    items = "".join(f"<li>{escape(reason)}.</li>" for reason in d.left_out.values())
    return (f'<div class="note" id="left-out-{escape(d.model)}">Left out of this report (the numbers stay in '
            f'<code>results/{escape(d.model)}/&lt;metric&gt;.json</code> and <code>results/metrics.tsv</code>):'
            f'<ul>{items}</ul></div>')


def model_section(settings: Settings, d: report_data.ModelData, figs: Mapping[str, str] | None = None,
                  nav: str = "") -> str:
    """One model's section; figs: its paper figures (kind -> HTML, sections_figures.model_figures):
    the differences figure stands where the SVG forest plot would, the trajectory figure in place
    of the SVG chart of the trajectory."""
    m = escape(d.model)
    figs = figs or {}
    enabled = settings.eval.trajectory.enabled and settings.eval.tifa.enabled
    grid_kind = "gold accuracy" if d.accuracy_key() == "gold_correct" else "TIFA score"
    forest = (f'<div class="charts" id="charts-{m}">{figs["differences"]}</div>' if "differences" in figs
              else sections_results.forest_chart(d.model, d.shown))
    none = "" if figs else '<p class="note">No figures for this model (no result files).</p>'
    trajectory = sections_figures.swap_chart(figures.trajectory_section(d.model, d.trajectory, enabled),
                                             f"trajectory-{d.model}", figs.get("trajectory", ""))
    return (
        f'<section id="model-{m}"><h2>{m} <small class="note">{escape(settings.models[d.model].pretrained)}</small></h2>'
        f'{nav}{verdicts.headline_html(d.model, d.shown, world=settings.eval.tifa.gold == "world")}'
        f'{scale_text(settings, d)}'
        f'<h3 id="results-head-{m}">Results: base vs AGFSync</h3>{sections_results.results_table(d.model, d.shown)}'
        f'{left_out_note(d)}<h3 id="figures-head-{m}">Figures: values, differences, element types</h3>{none}'
        f'{figs.get("values", "")}{forest}{sections_results.facet_tables(d.model, d.shown)}'
        f'{figs.get("element_types", "")}{sections_results.detail_tables(d.shown)}'
        f'<h3 id="trajectory-head-{m}">Proxy and gold along training</h3>{trajectory}'
        f'<h3>Training curves</h3>{figures.training_section(d.model, d)}'
        f'<h3>Score distributions</h3>{figures.eval_distributions(d.model, d)}'
        f'<h4>Preference data (stage 3-4)</h4>{figures.preference_section(d.model, d)}'
        f'<h3 id="images-head-{m}">Base vs AGFSync where {grid_kind} changed most</h3>'
        f'<div id="eval-images-{m}">{grids.change_grid(d.model, d)}{grids.samples_grid(d)}</div>'
        f'<h3>Training prompts: all candidates, winner and loser</h3>{grids.candidates_grid(d.model, d)}</section>')


def provenance(config_hash: str, loaded: list[report_data.ModelData], extra: str = "") -> str:
    hashes = sorted({r.get("config_hash") for d in loaded for r in d.results.values() if r.get("config_hash")})
    trained = sorted({d.train_summary["config_hash"] for d in loaded if (d.train_summary or {}).get("config_hash")})
    return (f'<p class="note" id="provenance">agfsync {escape(__version__)}. Config digest of this report '
            f'<code>{escape(config_hash)}</code> (agfsync.core.config.config_digest of the whole config); result '
            f'files: {", ".join(f"<code>{escape(h)}</code>" for h in hashes) or "none"} (per model: the config less the '
            f'other models\' settings); training: {", ".join(f"<code>{escape(h)}</code>" for h in trained) or "none"}. '
            f'CIs: 95% percentile bootstrap over prompts, 10,000 resamples, paired for differences '
            f'(agfsync.core.stats). Files: results/&lt;model&gt;/&lt;metric&gt;.json, every number in results/metrics.tsv.</p>'
            f'{code_states(loaded)}{extra}')


def cost_line(costs: job_costs.Costs, known: bool) -> str:
    return f'<p class="note" id="compute-provenance">{escape(compute.compute_text(costs, gpus_known=known))}</p>'


SHOWN_PACKAGES = ("torch", "diffusers", "transformers", "open_clip_torch", "deepspeed", "bitsandbytes")


def code_state_text(p: dict) -> str:
    """One result file's provenance (agfsync.core.provenance) in a line."""
    git = p.get("git", {})
    commit = "no git checkout" if not git.get("commit") else (
        f"git {git['commit'][:12]}" + (" with uncommitted changes" if git.get("dirty") else ""))
    versions = ", ".join(f"{k} {v}" for k, v in p.get("packages", {}).items() if k in SHOWN_PACKAGES and v)
    hw = p.get("hardware", {})
    where = f"{hw.get('machine', '?')}, {hw.get('cpus', '?')} CPUs" + (
        f", GPUs: {', '.join(hw['gpus'])}" if hw.get("gpus") else ", no GPU")
    return f"agfsync {p.get('agfsync', '?')} ({commit}); Python {p.get('python', '?')}, {versions}; written on {where}"


def code_states(loaded: list[report_data.ModelData]) -> str:
    """The distinct code states and machines that wrote the result files, each with its files."""
    states: dict[str, list[str]] = {}
    for d in loaded:
        for metric, result in d.results.items():
            if result.get("provenance"):
                states.setdefault(code_state_text(result["provenance"]), []).append(f"{d.model}/{metric}")
    if not states:
        return ""
    items = "".join(f"<li>{escape(text)}: {escape(', '.join(files))}</li>" for text, files in states.items())
    warn = " (more than one: the results come from different code or machines)" if len(states) > 1 else ""
    return f'<div class="note" id="code-states">Result files written by{warn}:<ul>{items}</ul></div>'


def run(settings: Settings, inputs: Mapping, outputs: Mapping, *, paths: dict, config_hash: str,
        hub: Mapping | None = None, gpus: Mapping | None = None) -> str:
    """Rule report: the page into outputs["report"] and every number of the result files into
    outputs["tsv"] (results/metrics.tsv, agfsync.report.table) from the files `paths` names per
    model (agfsync.core.dag.report_paths; the rule's inputs are the same files)."""
    return build_report(settings, outputs["report"], paths, config_hash=config_hash, tsv=outputs["tsv"], hub=hub,
                        gpus=gpus, figures_dir=outputs.get("figures"))


def build_report(settings: Settings, out_path, paths: dict, *, config_hash: str = "", tsv=None,
                 hub: Mapping | None = None, gpus: Mapping | None = None, root=".", figures_dir=None) -> str:
    """The page over the run models of `settings`. paths: per model, the files it reads, as
    agfsync.core.dag.report_paths gives them (rebased(...) moves them under another root).
    `tsv`: also write the table of every number of the result files there (agfsync.report.table).
    hub: the config's hub repositories and revisions (agfsync.core.downloads.hub_repos), their
    commits read from the download markers under `root`; gpus: GPUs per job of each rule
    (agfsync.core.dag.job_gpus), for the GPU-hours of the benchmark files under root/benchmarks
    (None: wall time only). Both come from the full config, which the report's settings lack.
    figures_dir: where the paper figures go (agfsync.report.plots; default figures/ beside
    out_path, as layout.FIGURES beside layout.REPORT), always created."""
    models = list(settings.run_models)
    costs = job_costs.collect(root, gpus or {}, models=models)
    commits = None if hub is None else code_provenance.hub_commits(hub, root)
    known = gpus is not None
    if tsv is not None:
        table.write_tsv(tsv, {model: paths[model]["metrics"] for model in models})
    loaded = [report_data.load(model, paths[model]) for model in models]
    page_dir = Path(out_path).parent
    folder = Path(figures_dir) if figures_dir else sections_figures.figures_folder(out_path)
    folder.mkdir(parents=True, exist_ok=True)  # the rule's output, with or without figures
    figs = {d.model: sections_figures.model_figures(d.model, d.shown, d.trajectory, folder, page_dir) for d in loaded}
    world = settings.eval.tifa.gold == "world"
    tops = []
    for d in loaded:
        up, down, with_ci = sections_results.measurable(d.shown)
        tops.append(f"{verdicts.headline_html(d.model, d.shown, world=world, ident='summary-headline')}"
                    f"{figures.warning_box(d.model, d.trajectory, 'top')}"
                    f'<p class="note">{escape(d.model)}: {up} of {with_ci} metrics with a CI improved, {down} got '
                    f"worse, the rest did not measurably change.</p>")
    sections = "".join(model_section(settings, d, figs[d.model], sections_figures.model_nav(models, i))
                       for i, d in enumerate(loaded))
    html = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>AGFSync report</title>"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}{sections_figures.CSS}"
        "</style></head><body>"
        f"<h1>AGFSync: did it work, and how sure are we?</h1>{run_note(settings)}"
        f"{sections_figures.toc(models)}<div id=\"summary\">{''.join(tops)}</div>"
        f"<h2 id=\"all-models\">All models</h2>{sections_results.summary_table({d.model: d.shown for d in loaded})}"
        f"{sections_figures.paper_table({d.model: d.shown for d in loaded})}"
        f"{sections_figures.figures_note(figs, folder, page_dir)}"
        f"{sections}"
        f"{compute.compute_section(costs, gpus_known=known)}"
        f"{provenance(config_hash, loaded, compute.hub_text(commits) + cost_line(costs, known))}"
        "</body></html>\n"
    )
    write_text(out_path, html)
    return html


def rebased(value, root):
    """report_paths' files, moved under another results directory (None: as they are)."""
    if root is None or value is None:
        return value
    if isinstance(value, dict):
        return {key: rebased(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [rebased(item, root) for item in value]
    return layout.under(root, value)
