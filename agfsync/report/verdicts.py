"""Numbers into words: how each metric is printed, whether a difference is a measurable
change, and the headline sentence per model (pure).

A difference counts as a change only when its 95% paired bootstrap CI excludes zero
(agfsync.core.stats.Interval.excludes_zero); otherwise the page says "did not measurably
change". Accuracies (tifa, gold, the judge's rates) are fractions in the result files and
are printed as percentages, their differences in percentage points; the 0-100 scores (CLIP,
aesthetic, proxy, HPS v2) in their own units. FID and the judge have no paired CI.
"""

from __future__ import annotations

from html import escape

from agfsync.core import stats

TITLES = {"tifa": "TIFA (VQA)", "clipscore": "CLIP score", "aesthetic": "Aesthetic", "proxy": "Proxy (stage-3 total)",
          "gold": "Gold accuracy (world oracle)", "hpsv2": "HPS v2", "mjhq_fid": "MJHQ-30K FID",
          "pickscore": "PickScore", "imagereward": "ImageReward", "hpsv21": "HPS v2.1", "vqascore": "VQAScore",
          "judge": "VLM judge win rate"}
LABELS = {"tifa": "TIFA score", "clipscore": "CLIP score", "aesthetic": "aesthetic score", "proxy": "proxy reward",
          "gold": "gold alignment", "hpsv2": "HPS v2", "mjhq_fid": "MJHQ-30K FID", "pickscore": "PickScore",
          "imagereward": "ImageReward", "hpsv21": "HPS v2.1", "vqascore": "VQAScore", "judge": "VLM judge win rate"}
PERCENT = {"tifa", "gold", "judge"}
FINE = {"vqascore"}  # probabilities in 0..1: three decimals
DISPLAY = ("gold", "proxy", "tifa", "clipscore", "aesthetic", "hpsv2", "hpsv21", "pickscore", "imagereward",
           "vqascore", "mjhq_fid", "judge")  # table order
SECONDARY = ("proxy", "gold", "tifa", "clipscore", "aesthetic", "hpsv2", "hpsv21", "pickscore", "imagereward",
             "vqascore", "judge", "mjhq_fid")
VERDICT_CLASS = {"yes": "up", "no: worse": "down", "no measurable change": "flat", "no CI": "flat"}


def interval(diff: dict) -> stats.Interval | None:
    """The difference's CI as an Interval, or None when the metric has none (FID, the judge)."""
    if "ci_low" not in diff or "ci_high" not in diff:
        return None
    return stats.Interval(float(diff["value"]), float(diff["ci_low"]), float(diff["ci_high"]), int(diff.get("n", 0)),
                          int(diff.get("resamples", stats.RESAMPLES)), int(diff.get("seed", 0)),
                          float(diff.get("level", stats.LEVEL)))


def unresponsive(diff: dict) -> bool:
    """True when every paired difference was exactly 0: the difference and both ends of its
    bootstrap CI are 0 over at least 2 prompts (a resample mean of differences that are not
    all 0 would not be 0 every time). A metric like that gave the base and the AGFSync
    image of every prompt the same score: it did not respond to what changed, so it cannot
    measure it (a VQA judge that answers from the question alone, as the world's BLIP-2 did
    until 2026-11-30)."""
    ci = interval(diff)
    return ci is not None and ci.n >= 2 and ci.value == ci.ci_low == ci.ci_high == 0.0


def left_out_reason(metric: str, result: dict) -> str:
    ci = interval(result["difference"])
    return (f"{TITLES.get(metric, metric)}: it gave the base and the AGFSync image the same score on every one of its "
            f"{ci.n} prompts (difference exactly 0, {ci.level:.0%} CI [0, 0]), so it did not respond to what AGFSync "
            f"changed and cannot measure it")


def direction(diff: dict) -> int | None:
    """+1 (the CI is above zero), -1 (below), 0 (it holds zero), None (no CI)."""
    ci = interval(diff)
    if ci is None:
        return None
    return 0 if not ci.excludes_zero else (1 if ci.ci_low > 0 else -1)


def improved(diff: dict, higher_is_better: bool = True) -> str:
    """The "improved?" column: yes, no: worse, no measurable change, or no CI."""
    way = direction(diff)
    if way is None:
        return "no CI"
    if way == 0:
        return "no measurable change"
    return "yes" if (way > 0) == higher_is_better else "no: worse"


def verdict_cell(diff: dict, higher_is_better: bool = True) -> str:
    word = improved(diff, higher_is_better)
    return f'<td class="{VERDICT_CLASS[word]}">{word}</td>'


def value_text(metric: str, value) -> str:
    if value is None:
        return "n/a"
    if metric in PERCENT:
        return f"{100 * value:.1f}%"
    if metric == "mjhq_fid":
        return f"{value:.4g}"
    return f"{value:.{scale_of(metric)[2]}f}"


def scale_of(metric: str) -> tuple[float, str, int]:
    """(scale, unit, digits) of a difference of the metric."""
    if metric in PERCENT:
        return (100.0, "points", 1)
    return (1.0, "", 3) if metric in FINE else (1.0, "", 2)


def delta_text(metric: str, diff: dict) -> str:
    """'+9.2 points (95% CI +6.8 to +11.5)' (stats.describe); without a CI, the value alone."""
    ci = interval(diff)
    scale, unit, digits = scale_of(metric)
    if ci is None:
        return f"{diff['value'] * scale:+.{digits}f}{' ' + unit if unit else ''}" if metric != "mjhq_fid" else \
            f"{diff['value']:+.4g}"
    return stats.describe(ci, scale, unit, digits)


def _inline(metric: str, ci: stats.Interval) -> str:
    """'+9.2 points, 95% CI +6.8 to +11.5' (inside parentheses)."""
    scale, unit, digits = scale_of(metric)

    def signed(x):
        return f"{x * scale:+.{digits}f}"

    return f"{signed(ci.value)}{' ' + unit if unit else ''}, {ci.level:.0%} CI {signed(ci.ci_low)} to {signed(ci.ci_high)}"


def primary_metric(results: dict[str, dict]) -> str | None:
    """What the headline leads with: gold where a gold standard exists, else TIFA, else the
    first metric with a CI."""
    for metric in ("gold", "tifa"):
        if metric in results:
            return metric
    return next((m for m in SECONDARY if m in results and interval(results[m]["difference"])), None)


def lead_sentence(metric: str, result: dict, where: str) -> str:
    diff, variants = result["difference"], result["variants"]
    base, tuned = value_text(metric, variants["base"]["value"]), value_text(metric, variants["agfsync"]["value"])
    label, way = LABELS[metric], direction(diff)
    ci = interval(diff)
    if way is None:
        return f"AGFSync changed {label} from {base} to {tuned} ({delta_text(metric, diff)}; no CI) {where}"
    if way == 0:
        return f"AGFSync did not measurably change {label} ({base} to {tuned}; {_inline(metric, ci)}) {where}"
    verb = "raised" if way > 0 else "lowered"
    return f"AGFSync {verb} {label} from {base} to {tuned} ({_inline(metric, ci)}) {where}"


def secondary_phrase(metric: str, result: dict) -> str:
    diff, label = result["difference"], LABELS[metric]
    if metric == "judge":
        judge = result.get("judge") or {}
        win, loss = result["variants"]["agfsync"], result["variants"]["base"]
        ci = win.get("details", {}).get("ci")
        ci_text = f" (95% CI {value_text('judge', ci[0])} to {value_text('judge', ci[1])})" if ci else ""
        return (f"the VLM judge preferred AGFSync in {value_text('judge', win['value'])} of "
                f"{judge.get('pairs_judged', result['count']['prompts'])} pairs{ci_text} and the base model in "
                f"{value_text('judge', loss['value'])}")
    if metric == "mjhq_fid":
        return (f"{label} {value_text(metric, result['variants']['base']['value'])} to "
                f"{value_text(metric, result['variants']['agfsync']['value'])} (lower is better; no CI: FID is not "
                f"paired by prompt)")
    way = direction(diff)
    word = {1: "rose", -1: "fell", 0: "did not measurably change", None: "changed (no CI)"}[way]
    return f"{label} {word}, {delta_text(metric, diff)}"


def headline(results: dict[str, dict], *, world: bool) -> str:
    """The headline of one model, as plain text (escape it for HTML)."""
    metric = primary_metric(results)
    if metric is None:
        return "No evaluation results yet."
    result = results[metric]
    n = int(result["difference"].get("n", result["count"]["prompts"]))
    where = f"on {n:,} held-out prompts" if world else f"on {n:,} {result['benchmark']['name']} prompts"
    text = lead_sentence(metric, result, where)
    others = [secondary_phrase(m, results[m]) for m in SECONDARY if m != metric and m in results]
    text += ("; " + "; ".join(others) + ".") if others else "."
    if "gold" in results and "proxy" in results and direction(results["proxy"]["difference"]) == 1:
        gold_way = direction(results["gold"]["difference"])
        if gold_way is not None and gold_way <= 0:
            text += (" The AI judges' reward rose while gold alignment " + ("fell" if gold_way < 0 else "did not rise")
                     + ": the tuning followed what the judges reward, not what the prompts ask.")
    return text


def headline_html(model: str, results: dict[str, dict], *, world: bool, ident: str = "headline") -> str:
    return (f'<p class="headline" id="{ident}-{escape(model)}"><b>{escape(model)}</b>: '
            f'{escape(headline(results, world=world))}</p>')
