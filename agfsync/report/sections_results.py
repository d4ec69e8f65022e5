"""The report's tables of numbers (pure): base vs AGFSync per metric with the paired CI of
the difference and the "improved?" verdict, the same across models, the differences as a
forest plot, gold and TIFA (VQA) per element type, split and category, and the benchmark
details (HPS v2 styles, MJHQ categories, the VLM judge)."""

from __future__ import annotations

from html import escape

from agfsync.core import published
from agfsync.report import svg
from agfsync.report.verdicts import (DISPLAY, TITLES, delta_text, direction, improved, interval, scale_of, value_text,
                                     verdict_cell)

ELEMENT_ORDER = ("color", "counting", "shape", "spatial", "size", "object")
FACET_TITLES = {"element_type": "By element type", "split": "By split (seen / unseen color-shape pairs)",
                "source": "By category (source)"}
DELTA_COLORS = {"yes": "#2b8a3e", "no: worse": "#c92a2a", "no measurable change": "#868e96", "no CI": "#868e96"}


def _benchmark(result: dict) -> str:
    bench = result["benchmark"]
    return bench["name"] if bench["version"] in bench["name"] else f"{bench['name']} {bench['version']}"


def _with_ci(metric: str, variant: dict) -> str:
    ci = variant.get("ci")
    text = value_text(metric, variant["value"])
    if ci and "ci_low" in ci:
        text += f' <span class="ci">[{value_text(metric, ci["ci_low"])}, {value_text(metric, ci["ci_high"])}]</span>'
    return text


def _metric_cells(metric: str, result: dict) -> str:
    base, tuned, diff = result["variants"]["base"], result["variants"]["agfsync"], result["difference"]
    arrow = "&uarr;" if result["higher_is_better"] else "&darr;"
    return (f"<td class=\"left\">{escape(TITLES[metric])} {arrow}</td><td class=\"left\">{escape(_benchmark(result))}</td>"
            f"<td>{_with_ci(metric, base)}</td><td>{_with_ci(metric, tuned)}</td>"
            f"<td>{escape(delta_text(metric, diff))}</td>{verdict_cell(diff, result['higher_is_better'])}"
            f"<td>{result['difference'].get('n', result['count']['prompts'])}</td>")


HEAD = ("<th>Metric</th><th>Benchmark</th><th>Base [95% CI]</th><th>AGFSync [95% CI]</th>"
        "<th>&Delta; AGFSync &minus; base (95% CI, paired bootstrap)</th><th>Improved?</th><th>Prompts</th>")


def results_table(model: str, results: dict[str, dict]) -> str:
    rows = [f"<tr>{_metric_cells(m, results[m])}</tr>" for m in DISPLAY if m in results]
    if not rows:
        return '<p class="note">No evaluation results for this model.</p>'
    return (f'<table id="results-{escape(model)}"><tr>{HEAD}</tr>{"".join(rows)}</table>'
            '<p class="note">Improved? counts a change only where the 95% CI of the difference excludes zero. '
            'Accuracies are percentages, their differences percentage points; CLIP, aesthetic and proxy are '
            'on 0-100. &uarr; higher is better, &darr; lower is better.</p>')


def summary_table(by_model: dict[str, dict[str, dict]]) -> str:
    rows = []
    for model, results in by_model.items():
        metrics = [m for m in DISPLAY if m in results]
        for i, metric in enumerate(metrics):
            first = f'<td rowspan="{len(metrics)}"><a href="#model-{escape(model)}">{escape(model)}</a></td>' if i == 0 else ""
            rows.append(f"<tr>{first}{_metric_cells(metric, results[metric])}</tr>")
    if not rows:
        return '<p class="note">No evaluation results yet.</p>'
    return f'<table id="summary-table"><tr><th>Model</th>{HEAD}</tr>{"".join(rows)}</table>'


def forest_chart(model: str, results: dict[str, dict]) -> str:
    """Every paired difference with its CI, on one axis (points or 0-100 units)."""
    rows = []
    for metric in DISPLAY:
        result = results.get(metric)
        ci = interval(result["difference"]) if result else None
        if ci is None:
            continue
        scale = scale_of(metric)[0]
        word = improved(result["difference"], result["higher_is_better"])
        rows.append((TITLES[metric], ci.value * scale, ci.ci_low * scale, ci.ci_high * scale, DELTA_COLORS[word]))
    if not rows:
        return ""
    chart = svg.forest(f"{model}: AGFSync minus base, with 95% CIs", rows,
                       x_label="difference (accuracy: percentage points; scores: units of their 0-100 scale)")
    return f'<div class="charts" id="charts-{escape(model)}">{chart}</div>'


def _order(names) -> list[str]:
    return sorted(names, key=lambda n: (ELEMENT_ORDER.index(n) if n in ELEMENT_ORDER else len(ELEMENT_ORDER), n))


def _part_cells(metric: str, part: dict | None) -> str:
    if part is None:
        return '<td colspan="5" class="note">-</td>'
    scale, _, digits = scale_of(metric)
    delta = (f"{part['value'] * scale:+.{digits}f} <span class=\"ci\">[{part['ci_low'] * scale:+.{digits}f}, "
             f"{part['ci_high'] * scale:+.{digits}f}]</span>")
    return (f"<td>{value_text(metric, part['base'])}</td><td>{value_text(metric, part['agfsync'])}</td>"
            f"<td>{delta}</td>{verdict_cell(part)}<td>{part['n']}</td>")


def facet_tables(model: str, results: dict[str, dict]) -> str:
    """Gold and TIFA (VQA) per element type, split and category, each with its paired CI."""
    metrics = [m for m in ("gold", "tifa") if m in results]
    out = []
    for facet, title in FACET_TITLES.items():
        parts = {m: results[m]["difference"].get(f"by_{facet}", {}) for m in metrics}
        names = _order({name for p in parts.values() for name in p})
        if not names:
            continue
        head = "".join(f'<th colspan="5">{escape(TITLES[m])}</th>' for m in metrics)
        sub = "<th>Base</th><th>AGFSync</th><th>&Delta; points [95% CI]</th><th>Improved?</th><th>Prompts</th>" * len(metrics)
        rows = "".join(f"<tr><td>{escape(name)}</td>{''.join(_part_cells(m, parts[m].get(name)) for m in metrics)}</tr>"
                       for name in names)
        ident = ' id="gold-parts"' if facet == "element_type" and "gold" in metrics else ""
        out.append(f"<h4{ident}>{escape(title)}</h4><table class=\"facets\" id=\"{facet}-{escape(model)}\"><tr>"
                   f"<th rowspan=\"2\">{escape(facet.replace('_', ' '))}</th>{head}</tr><tr>{sub}</tr>{rows}</table>")
    if not out:
        return ""
    sources = {"gold": "Gold: the oracle's answers", "tifa": "TIFA (VQA): the AI judge's (BLIP-2) answers to the "
               "same questions"}
    return ("".join(out) + '<p class="note">Per prompt, the accuracy over its questions of that part; prompts '
            'without it are left out (Prompts = those that have it). '
            f'{escape("; ".join(sources[m] for m in metrics))}.</p>')


def _implementation(info: dict) -> str:
    return "; ".join(f"{escape(str(k))}: {escape(str(v))}" for k, v in info.items())


def _disagreement(tifa: dict) -> str:
    """How often the official answering and ours chose differently, per variant (answering: tifa)."""
    parts = []
    for variant, name in (("base", "base"), ("agfsync", "AGFSync")):
        d = tifa["variants"][variant]["details"].get("answering_disagreement")
        if d and d["questions"]:
            parts.append(f"{name} {d['rate']:.1%} of {d['questions']:,} questions")
    return (f". Our choice scoring picks another answer than the official protocol on the same images: "
            f"{'; '.join(parts)}") if parts else ""


def _per_group_table(title: str, group: str, base: dict, tuned: dict, key: str, fmt: str, note: str = "") -> str:
    """Base, AGFSync and their difference per group (HPS v2 style, MJHQ category)."""
    cells = "".join(f"<tr><td>{escape(g)}</td><td>{base[g][key]:{fmt}}</td><td>{tuned[g][key]:{fmt}}</td>"
                    f"<td>{tuned[g][key] - base[g][key]:+{fmt}}</td></tr>" for g in base)
    return (f"<h4>{title}</h4><table><tr><th>{group}</th><th>Base</th><th>AGFSync</th><th>&Delta;</th></tr>"
            f"{cells}</table>{note}")


def published_table(result: dict) -> str:
    """The published numbers of the same benchmark, protocol and base model beside our base
    model's: whether our evaluation reproduces them."""
    entry = published.for_result(result)
    cells = "".join(f"<tr><td>{escape(part)}</td><td>{value:.2f}</td>"
                    f"<td>{'-' if ours is None else f'{ours:.2f}'}</td>"
                    f"<td>{'-' if ours is None else f'{ours - value:+.2f}'}</td></tr>"
                    for part, value, ours in published.beside(result))
    return (f"<h4>{escape(TITLES[entry.metric])}: published vs ours, base model</h4><table><tr><th>Part</th>"
            f"<th>Published</th><th>Ours, base</th><th>Ours &minus; published</th></tr>{cells}</table>"
            f"<p class=\"note\">Published: {escape(entry.source)}; the same benchmark version ({escape(entry.version)}), "
            f"base model ({escape(entry.pretrained)}) and all {entry.prompts:,} prompts. Its sampler and seeds "
            "are the authors', ours are the config's.</p>")


def detail_tables(results: dict[str, dict]) -> str:
    out = []
    hps = results.get("hpsv2")
    if hps:
        out.append(_per_group_table(f"HPS v2 per style ({escape(hps['benchmark']['version'])})", "Style",
                                    hps["variants"]["base"]["details"]["styles"],
                                    hps["variants"]["agfsync"]["details"]["styles"], "mean", ".2f"))
    out += [published_table(r) for r in results.values() if published.for_result(r)]
    tifa = results.get("tifa")
    if tifa:
        out.append(f"<p class=\"note\">TIFA answering: {escape(str(tifa['implementation'].get('answering', '-')))}"
                   f"{_disagreement(tifa)}</p>")
    fid = results.get("mjhq_fid")
    if fid:
        out.append(_per_group_table("MJHQ-30K FID per category (lower is better)", "Category",
                                    fid["variants"]["base"]["details"]["by_category"],
                                    fid["variants"]["agfsync"]["details"]["by_category"], "fid", ".4g",
                                    f"<p class=\"note\">{_implementation(fid['implementation'])}</p>"))
    judge = results.get("judge")
    if judge:
        j = judge["judge"]
        names = {"win": "AGFSync preferred", "tie": "tie", "loss": "base preferred"}
        cells = "".join(f"<tr><td>{names[o]}</td><td>{j['counts'][o]}</td><td>{value_text('judge', j[o]['rate'])}</td>"
                        f"<td>[{value_text('judge', j[o]['ci'][0])}, {value_text('judge', j[o]['ci'][1])}]</td></tr>"
                        for o in ("win", "tie", "loss"))
        out.append(f"<h4>VLM judge ({escape(judge['implementation']['model'])}): AGFSync vs base, same prompt and "
                   f"seed</h4><table><tr><th>Verdict</th><th>Pairs</th><th>Rate</th>"
                   f"<th>{int(j['confidence'] * 100)}% CI (Wilson)</th></tr>{cells}</table>"
                   f"<p class=\"note\">{j['skipped']} pair(s) skipped (invalid or failed answers).</p>")
    return "".join(out)


def measurable(results: dict[str, dict]) -> tuple[int, int, int]:
    """(improved, worse, with a CI) over the metrics of one model."""
    ways = [(direction(r["difference"]), r["higher_is_better"]) for r in results.values()]
    ways = [(w, h) for w, h in ways if w is not None]
    return (sum(1 for w, h in ways if w and (w > 0) == h), sum(1 for w, h in ways if w and (w > 0) != h), len(ways))
