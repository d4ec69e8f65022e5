"""The report's figures (inline SVG, agfsync.report.svg; pure): proxy and gold along
training (results/{model}/trajectory.json) with the reward-hacking warning, the Diffusion-DPO
training curves, and score distributions (the candidates' scores, base vs AGFSync per image)."""

from __future__ import annotations

from html import escape

from agfsync.core import trajectory as trajectory_watch
from agfsync.core.pairs import SUBSCORES, weighted_total
from agfsync.report import svg
from agfsync.report.data import ModelData

MEASURE_AXES = {"proxy": ("proxy reward (0-100)", 1.0), "gold": ("gold accuracy (%)", 100.0),
                "tifa": ("TIFA (VQA) score (%)", 100.0)}


def warning_box(model: str, trajectory: dict | None, where: str = "trajectory") -> str:
    """The trajectory's reward-hacking sentence in a red box (id warning-{where}-{model}); an
    amber one when gold's fall is not significant (agfsync.core.trajectory.warning)."""
    text = (trajectory or {}).get("warning")
    if not text:
        return ""
    kind = "caution" if text.startswith(trajectory_watch.POSSIBLE) else "warning"
    return (f'<div class="{kind}" role="alert" id="warning-{where}-{escape(model)}"><b>&#9888; {escape(text)}</b>'
            f'</div>')


def _ci(part: dict, scale: float, digits: int) -> str:
    return (f"{part['mean'] * scale:.{digits}f} [{part['ci_low'] * scale:.{digits}f}, {part['ci_high'] * scale:.{digits}f}]"
            f"</td><td>{part['delta'] * scale:+.{digits}f} [{part['delta_ci_low'] * scale:+.{digits}f}, "
            f"{part['delta_ci_high'] * scale:+.{digits}f}]")


def trajectory_section(model: str, trajectory: dict | None, enabled: bool) -> str:
    if trajectory is None:
        why = "not computed yet" if enabled else "eval.trajectory is disabled in the config"
        return f'<p class="note">No proxy-vs-gold trajectory ({why}).</p>'
    points = trajectory.get("points") or []
    measures = [m for m in ("proxy", "gold" if "gold" in (points[0] if points else {}) else "tifa")
                if points and m in points[0]]
    panels = [{"label": MEASURE_AXES[m][0], "scale": MEASURE_AXES[m][1], "color": svg.PALETTE[i],
               "points": [(p["step"], p[m]["mean"], p[m]["ci_low"], p[m]["ci_high"]) for p in points]}
              for i, m in enumerate(measures)]
    names = " and ".join(MEASURE_AXES[m][0].split(" (")[0] for m in measures)
    chart = svg.band_chart(f"{model}: {names} vs step (mean, 95% CI)", panels)
    head = "".join(f'<th>{escape(MEASURE_AXES[m][0])} [95% CI]</th><th>change from step 0 [95% CI]</th>' for m in measures)
    rows = "".join(f"<tr><td>{p['step']}</td><td>{100 * p['fraction']:.0f}%</td>"
                   + "".join(f"<td>{_ci(p[m], MEASURE_AXES[m][1], 2 if MEASURE_AXES[m][1] == 1 else 1)}</td>"
                             for m in measures) + "</tr>" for p in points)
    n = points[0].get("n") if points else None
    method = escape(str((trajectory.get("ci") or {}).get("method", "bootstrap")))
    quiet = "gold" in measures and not trajectory.get("warning")
    note = (f'<p class="note">The same {n} TIFA prompts and seeds at every point (one image each); step 0 is the '
            f'base model. Changes are paired over prompts ({method}).'
            f'{" No reward-hacking warning: over the last points the proxy did not rise while gold fell." if quiet else ""}'
            f'</p>')
    return (f'{warning_box(model, trajectory)}<div class="charts" id="trajectory-{escape(model)}">{chart}</div>'
            f'<table><tr><th>Step</th><th>Of training</th>{head}</tr>{rows}</table>{note}')


def training_section(model: str, data: ModelData) -> str:
    rows = data.train_rows
    if not rows:
        return '<p class="note">No training metrics.</p>'

    def series(key):
        return [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]

    charts = [svg.line_chart("Diffusion-DPO loss", {"loss": series("loss")}, y_label="loss"),
              svg.line_chart("Implicit accuracy", {"implicit accuracy": series("implicit_acc")},
                             y_label="fraction of pairs with r_w > r_l"),
              svg.line_chart("Reward margin", {"reward margin": series("reward_margin")},
                             y_label="mean r_w - r_l (implicit reward)"),
              svg.line_chart("Learning rate", {"lr": series("lr")}, y_label="learning rate", smooth=False)]
    s = data.train_summary
    note = ""
    if s:
        how = f"LoRA rank {s['lora_rank']}" if s.get("lora_rank") else "full UNet"
        note = (f'<p class="note">{s["steps"]} steps, global batch {s["global_batch"]} pairs, {how}, '
                f'{s.get("processes", 1)} process(es), ZeRO {s.get("zero_stage")}, {escape(str(s.get("optimizer")))}, '
                f'loss {escape(str(s.get("loss")))}, {s.get("wall_seconds", 0):.0f} s. Implicit rewards r = '
                f'-0.5 beta (model error - reference error) on the winner (w) and loser (l).</p>')
    return f'<div class="charts" id="training-{escape(model)}">{"".join(charts)}</div>{note}'


def _counts(values: list[float], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for value in values:
        index = next((i for i in range(len(counts)) if value < edges[i + 1]), len(counts) - 1)
        counts[max(index, 0)] += 1
    return counts


def _per_prompt(data: ModelData, key: str) -> dict[str, list[float]]:
    import statistics

    return {v: [statistics.fmean(r[key]) for r in rows.values() if r.get(key)] for v, rows in data.per_image.items()}


def eval_distributions(model: str, data: ModelData) -> str:
    """Base vs AGFSync per image: accuracy (gold, else TIFA), its per-prompt change, the proxy."""
    key = data.accuracy_key()
    if key is None:
        return ""
    name = "gold accuracy" if key == "gold_correct" else "TIFA (VQA) score"
    per = _per_prompt(data, key)
    edges = [10.0 * i for i in range(11)]
    charts = [svg.grouped_histogram(f"Per-image {name}: base vs AGFSync", edges,
                                    {"base": _counts([100 * v for v in per["base"]], edges),
                                     "agfsync": _counts([100 * v for v in per["agfsync"]], edges)},
                                    x_label=f"{name} of the image's questions (%)", y_label="prompts")]
    ids = sorted(set(data.per_image["base"]) & set(data.per_image["agfsync"]))
    deltas = [100 * (sum(data.per_image["agfsync"][i][key]) / len(data.per_image["agfsync"][i][key])
                     - sum(data.per_image["base"][i][key]) / len(data.per_image["base"][i][key])) for i in ids]
    edges = [-105.0 + 10 * i for i in range(22)]
    gains, losses = sum(d > 0 for d in deltas), sum(d < 0 for d in deltas)
    charts.append(svg.histogram(f"Per-prompt change in {name}", edges, _counts(deltas, edges), color="#1c7ed6",
                                x_label="AGFSync - base (percentage points)", y_label="prompts", width=360))
    weights = ((data.results.get("proxy") or {}).get("implementation") or {}).get("weights")
    if weights and all(all(k in r for k in SUBSCORES) for rows in data.per_image.values() for r in rows.values()):
        totals = {v: [weighted_total(r, weights) for r in rows.values()] for v, rows in data.per_image.items()}
        low = min(min(t) for t in totals.values())
        high = max(max(t) for t in totals.values())
        step = (high - low) / 12 or 1.0
        edges = [low + step * i for i in range(13)]
        charts.append(svg.grouped_histogram("Per-image proxy reward: base vs AGFSync", edges,
                                            {v: _counts(t, edges) for v, t in totals.items()},
                                            x_label="proxy reward (0-100)", y_label="prompts"))
    return (f'<div class="charts" id="distributions-{escape(model)}">{"".join(charts)}</div>'
            f'<p class="note">{gains} prompts gained, {losses} lost, {len(deltas) - gains - losses} unchanged '
            f'({name}, same prompt and seed).</p>')


def preference_section(model: str, data: ModelData) -> str:
    s = data.pairs_summary
    if not s:
        return '<p class="note">No preference data.</p>'
    charts = []
    for name, label in (("total", "weighted total"), *((k, k.upper() if k != "aesthetic" else k) for k in SUBSCORES)):
        hist = (s["scores"].get(name) or {}).get("histogram")
        if hist:
            charts.append(svg.histogram(f"Candidates: {label} score", hist["edges"], hist["counts"],
                                        x_label=f"{label} score (0-100)", y_label="candidate images"))
    margin = (s.get("margin") or {}).get("histogram")
    if margin:
        charts.append(svg.histogram("Winner - loser margin", margin["edges"], margin["counts"], color="#2b8a3e",
                                    x_label="total(winner) - total(loser) (0-100 scale)", y_label="pairs"))
    means = "".join(f"<tr><td>{k}</td><td>{_n(s['winner_mean'][k])}</td><td>{_n(s['loser_mean'][k])}</td></tr>"
                    for k in (*SUBSCORES, "total"))
    dropped = ", ".join(f"{k}: {v}" for k, v in s["dropped"].items())
    weights = ", ".join(f"{k} {v}" for k, v in s["weights"].items())
    by_category: dict[str, list[float]] = {}
    for pair in data.pairs:
        by_category.setdefault(str(pair.get("category")), []).append(pair["margin"])
    cats = "".join(f"<tr><td>{escape(c)}</td><td>{len(m)}</td><td>{sum(m) / len(m):.2f}</td></tr>"
                   for c, m in sorted(by_category.items()))
    cat_table = (f"<table><tr><th>Category</th><th>Pairs</th><th>Mean margin</th></tr>{cats}</table>"
                 if len(by_category) > 1 else "")
    swapped = " <b>Swapped pairs (negative control): the worse candidate is the winner.</b>" if s.get("swapped") else ""
    return (f"<p>{s['num_pairs']} pairs from {s['num_prompts_scored']} scored prompts (dropped: {dropped}); "
            f"weighted total = {escape(weights)}.{swapped}</p><div class=\"charts\" id=\"preference-{escape(model)}\">"
            f"{''.join(charts)}</div><div class=\"charts\"><table><tr><th>Mean score</th><th>Winner</th><th>Loser</th>"
            f"</tr>{means}</table>{cat_table}</div>")


def _n(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"
