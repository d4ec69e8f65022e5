"""What every result file results/{model}/{metric}.json shares (agfsync.stages.metrics): the
envelope, the check that both variants cover the same prompts, and the confidence intervals.

Intervals: every difference measured on the same prompts carries a paired percentile
bootstrap CI over prompts (agfsync.core.stats.paired_delta: 10,000 resamples, 95%), each
variant's value a bootstrap CI of its mean (stats.mean_ci). Seeds derive from the config seed,
"bootstrap", the metric and the part (agfsync.core.seeds.derive_seed), so a result file is
reproducible. In the file:

  difference  {"value", "ci_low", "ci_high", "level", "resamples", "seed", "n" (prompts), ...}
  variants.<v>.ci  {"ci_low", "ci_high", "level", "resamples", "seed", "n"}
  difference.by_<facet>.<name>  (tifa, gold: element_type, source, split) {"value", "ci_low",
      "ci_high", "level", "resamples", "seed", "n", "base", "agfsync"}: per prompt, the value
      over that prompt's part (e.g. the accuracy over its questions of one element type);
      prompts without the part are left out, n counts the others; base and agfsync are the
      means over those n prompts, value their paired difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from agfsync.core import provenance, stats
from agfsync.core.benchmarks import VARIANTS
from agfsync.core.io import DataError
from agfsync.core.seeds import derive_seed

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

RESAMPLES = stats.RESAMPLES
CI_KEYS = ("ci_low", "ci_high", "level", "resamples", "seed", "n")


def check_same_prompts(rows_by_variant: dict[str, list[dict]], what: str) -> None:
    ids = {v: sorted(r["prompt_id"] for r in rows) for v, rows in rows_by_variant.items()}
    if ids["base"] != ids["agfsync"]:
        only = sorted(set(ids["base"]) ^ set(ids["agfsync"]))[:5]
        raise DataError(f"{what}: base and agfsync images cover different prompts (e.g. {', '.join(only)}); "
                        f"rerun the missing evaluation shards")
    if not ids["base"]:
        raise DataError(f"{what}: no evaluated images")


def envelope(metric: str, model: str, settings: Settings, config_hash: str, *, benchmark: dict,
             higher_is_better: bool, values: dict[str, dict], by_group: dict | None, prompts: int, images: int,
             implementation: dict) -> dict:
    result = {
        "metric": metric, "model": model, "pretrained": settings.models[model].pretrained, "benchmark": benchmark,
        "higher_is_better": higher_is_better,
        "variants": {v: values[v] for v in VARIANTS},
        "difference": {"value": values["agfsync"]["value"] - values["base"]["value"]},
        "count": {"prompts": prompts, "images": images},
        "implementation": implementation, "config_hash": config_hash, "provenance": provenance.collect(),
    }
    if by_group:
        result["difference"]["by_group"] = by_group
    return result


def bootstrap_seed(seed: int, metric: str, *part: str) -> int:
    return derive_seed(seed, "bootstrap", metric, *part)


def paired(base: Mapping[str, float], tuned: Mapping[str, float], seed: int, what: str) -> stats.Interval:
    """The paired interval of tuned - base over the prompts (keys) both hold, in key order."""
    ids = sorted(base)
    if sorted(tuned) != ids:
        raise DataError(f"{what}: base and agfsync values cover different prompts")
    return stats.paired_delta([base[k] for k in ids], [tuned[k] for k in ids], seed=seed, resamples=RESAMPLES)


def add_intervals(result: dict, seed: int, base: Mapping[str, float], tuned: Mapping[str, float]) -> dict:
    """The CI of the difference and of each variant's value, from per-prompt values whose
    means are the variants' values (weighted by the caller where the protocol weights them)."""
    metric = result["metric"]
    interval = paired(base, tuned, bootstrap_seed(seed, metric), f"{metric} ({result['model']})").as_dict()
    result["difference"].update({k: interval[k] for k in CI_KEYS})
    for variant, values in (("base", base), ("agfsync", tuned)):
        ci = stats.mean_ci([values[k] for k in sorted(values)], resamples=RESAMPLES,
                           seed=bootstrap_seed(seed, metric, variant)).as_dict()
        result["variants"][variant]["ci"] = {k: ci[k] for k in CI_KEYS}
    return result


def facet_intervals(seed: int, metric: str, facet: str, base: Mapping[str, Mapping[str, float]],
                    tuned: Mapping[str, Mapping[str, float]]) -> dict[str, dict]:
    """Per name of a facet (element type, source, split): the paired interval over the prompts
    that have that name. base/tuned: prompt id -> {name: the prompt's value for it}."""
    names = sorted({name for parts in base.values() for name in parts})
    out = {}
    for name in names:
        ids = [k for k in sorted(base) if name in base[k] and name in tuned.get(k, {})]
        b = {k: base[k][name] for k in ids}
        t = {k: tuned[k][name] for k in ids}
        interval = paired(b, t, bootstrap_seed(seed, metric, facet, name), f"{metric} {facet} {name}").as_dict()
        out[name] = {**interval, "base": sum(b.values()) / len(b), "agfsync": sum(t.values()) / len(t)}
    return out
