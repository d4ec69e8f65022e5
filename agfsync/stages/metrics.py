"""Result files results/{model}/{metric}.json (rule eval_metric): base and AGFSync side
by side, the difference (AGFSync - base), counts, benchmark version, implementation and
the config hash. Format: agfsync/core/schemas/result.schema.yaml. Pure aggregation over the
per-image score files; only mjhq_fid imports torch (torchmetrics' Fréchet distance).

  tifa       TIFA score = mean over prompts of the fraction of the prompt's questions
             answered correctly; accuracy per element type and per source (agfsync.core.tifa)
  clipscore  mean CLIP score of the TIFA images (the paper's TIFA table reports it)
  aesthetic  mean LAION aesthetic score (x10, as the scores stage) of the TIFA images
  hpsv2      per style, mean of 80-image chunk means; average over styles (agfsync.models.hps)
  mjhq_fid   FID per category and overall, generated vs reference images (agfsync.models.fid)
  judge      AGFSync win / tie / loss rates from the VLM judge (agfsync.stages.judge)

Entry point: `run(settings, inputs, outputs, model=, metric=, config_hash=)`, called by the
rule's script and by `agfsync metric` (the judge's file: agfsync.stages.judge.run).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agfsync.models import hps

from agfsync.core import tifa
from agfsync.core.benchmarks import METRICS, NAMES, SOURCE, VARIANTS, metrics_for  # noqa: F401 (re-exported)
from agfsync.core.io import DataError, read_jsonl

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

log = logging.getLogger(__name__)

RESULT_SCHEMA = Path(__file__).resolve().parents[1] / "core" / "schemas" / "result.schema.yaml"


def read_rows(paths) -> list[dict]:
    rows = []
    for path in paths:
        rows += read_jsonl(path, required=("prompt_id", "group"))
    return rows


def _check_same_prompts(rows_by_variant: dict[str, list[dict]], what: str) -> None:
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
        "implementation": implementation, "config_hash": config_hash,
    }
    if by_group:
        result["difference"]["by_group"] = by_group
    return result


def _group_diff(details: dict[str, dict], key: str, field: str) -> dict[str, float]:
    base, tuned = details["base"][key], details["agfsync"][key]
    return {g: tuned[g][field] - base[g][field] for g in sorted(base) if g in tuned}


def tifa_result(model: str, settings: Settings, config_hash: str, rows_by_variant: dict[str, list[dict]]) -> dict:
    _check_same_prompts(rows_by_variant, f"tifa ({model})")
    values, details = {}, {}
    for variant, rows in rows_by_variant.items():
        scored = tifa.score({r["prompt_id"]: list(zip(r["element_types"], r["correct"])) for r in rows})
        by_source = defaultdict(list)
        for r in rows:
            by_source[r["group"]].append(float(np.mean(r["correct"])))
        details[variant] = {"by_element_type": scored["by_element_type"],
                            "by_source": {g: {"score": float(np.mean(v)), "num_prompts": len(v)} for g, v in sorted(by_source.items())},
                            "num_questions": scored["num_questions"]}
        values[variant] = {"value": scored["score"], "details": details[variant]}
    by_type = {t: details["agfsync"]["by_element_type"][t]["accuracy"] - details["base"]["by_element_type"][t]["accuracy"]
               for t in details["base"]["by_element_type"]}
    n = len(rows_by_variant["base"])
    return envelope("tifa", model, settings, config_hash,
                    benchmark={"name": NAMES["tifa"], "version": settings.eval.tifa.version},
                    higher_is_better=True, values=values, by_group=by_type, prompts=n, images=2 * n,
                    implementation={"vqa_model": settings.scores.vqa.model,
                                    "answering": "choice scoring (yes/no logits; multiple choice by choice likelihood)"})


def mean_result(metric: str, field: str, model: str, settings: Settings, config_hash: str, rows_by_variant,
                implementation) -> dict:
    _check_same_prompts(rows_by_variant, f"{metric} ({model})")
    values = {}
    for variant, rows in rows_by_variant.items():
        scores = np.asarray([r[field] for r in rows], dtype=np.float64)
        groups = defaultdict(list)
        for r in rows:
            groups[r["group"]].append(r[field])
        values[variant] = {"value": float(scores.mean()), "details": {
            "std": float(scores.std()), "by_group": {g: {"mean": float(np.mean(v)), "num_images": len(v)}
                                                     for g, v in sorted(groups.items())}}}
    paired = _paired(rows_by_variant, field)
    values["agfsync"]["details"]["better_than_base_fraction"] = paired
    n = len(rows_by_variant["base"])
    by_group = {g: values["agfsync"]["details"]["by_group"][g]["mean"] - values["base"]["details"]["by_group"][g]["mean"]
                for g in values["base"]["details"]["by_group"]}
    bench = SOURCE[metric]
    return envelope(metric, model, settings, config_hash,
                    benchmark={"name": NAMES[bench], "version": getattr(settings.eval, bench).version},
                    higher_is_better=True, values=values, by_group=by_group, prompts=n, images=2 * n,
                    implementation=implementation)


def _paired(rows_by_variant, field: str) -> float:
    base = {r["prompt_id"]: r[field] for r in rows_by_variant["base"]}
    tuned = {r["prompt_id"]: r[field] for r in rows_by_variant["agfsync"]}
    return float(np.mean([tuned[k] > base[k] for k in base]))


def hps_result(model: str, settings: Settings, config_hash: str, rows_by_variant) -> dict:
    _check_same_prompts(rows_by_variant, f"hpsv2 ({model})")
    values = {}
    for variant, rows in rows_by_variant.items():
        order = {style: [] for style in hps.STYLES}
        for r in sorted(rows, key=lambda r: int(r["prompt_id"].rsplit("-", 1)[1])):  # "{style}-{index}": benchmark order
            order.setdefault(r["group"], []).append(r["hps"])
        aggregated = hps.aggregate({s: v for s, v in order.items() if v})
        values[variant] = {"value": aggregated["average"], "details": {"styles": aggregated["styles"]}}
    values["agfsync"]["details"]["better_than_base_fraction"] = _paired(rows_by_variant, "hps")
    by_style = {s: values["agfsync"]["details"]["styles"][s]["mean"] - values["base"]["details"]["styles"][s]["mean"]
                for s in values["base"]["details"]["styles"]}
    hpsv2 = settings.eval.hpsv2
    n = len(rows_by_variant["base"])
    return envelope("hpsv2", model, settings, config_hash, benchmark={"name": NAMES["hpsv2"], "version": hpsv2.version},
                    higher_is_better=True, values=values, by_group=by_style, prompts=n, images=2 * n,
                    implementation={"model": hpsv2.model, "checkpoint": Path(hpsv2.checkpoint).name,
                                    "preprocess": "longest side to input size (bicubic), pad to square, OpenAI mean/std",
                                    "score": "100 * cos", "chunk": hps.CHUNK})


def fid_result(model: str, settings: Settings, config_hash: str, features_by_variant: dict[str, dict],
               reference: dict) -> dict:
    from agfsync.models.fid import frechet_distance, implementation

    ref_by_group = defaultdict(list)
    for index, group in enumerate(reference["groups"]):
        ref_by_group[group].append(index)
    values = {}
    for variant, data in features_by_variant.items():
        if sorted(data["ids"]) != sorted(reference["ids"]):
            raise DataError(f"mjhq_fid ({model}, {variant}): generated images and reference images cover different "
                            f"MJHQ ids; rerun the missing evaluation shards")
        by_group = defaultdict(list)
        for index, group in enumerate(data["groups"]):
            by_group[group].append(index)
        per_category = {}
        for group in sorted(ref_by_group):
            per_category[group] = {"fid": frechet_distance(data["features"][by_group[group]],
                                                           reference["features"][ref_by_group[group]]),
                                   "num_images": len(by_group[group])}
        overall = frechet_distance(data["features"], reference["features"])
        values[variant] = {"value": overall, "details": {"by_category": per_category,
                                                         "category_mean": float(np.mean([c["fid"] for c in per_category.values()]))}}
    by_group = _group_diff({v: values[v]["details"] for v in VARIANTS}, "by_category", "fid")
    n = len(reference["ids"])
    return envelope("mjhq_fid", model, settings, config_hash, benchmark={"name": NAMES["mjhq"], "version": "MJHQ-30K"},
                    higher_is_better=False, values=values, by_group=by_group, prompts=n, images=3 * n,
                    implementation={**implementation(), **reference["info"],
                                    "generated_resolution": settings.models[model].resolution})


def judge_result(model: str, settings: Settings, config_hash: str, summary: dict, skipped: dict, stats: dict) -> dict:
    judge = settings.eval.judge
    win, loss = summary["win"]["rate"], summary["loss"]["rate"]
    if summary["pairs_judged"] == 0:
        raise DataError(f"judge ({model}): no pair was judged ({len(skipped)} skipped); see the log for reasons")
    values = {"base": {"value": loss, "details": {"wins": summary["counts"]["loss"], "ci": summary["loss"]["ci"]}},
              "agfsync": {"value": win, "details": {"wins": summary["counts"]["win"], "ci": summary["win"]["ci"]}}}
    result = envelope("judge", model, settings, config_hash,
                      benchmark={"name": f"VLM judge on {NAMES[judge.benchmark]}", "version": judge.llm.model},
                      higher_is_better=True, values=values, by_group=None, prompts=summary["pairs_judged"],
                      images=2 * summary["pairs_judged"],
                      implementation={"model": judge.llm.model, "provider": judge.llm.provider,
                                      "order": "randomised per pair", "interval": "Wilson score"})
    result["judge"] = {**summary, "skipped": len(skipped),
                       "skipped_reasons": {k: v for k, v in sorted(skipped.items())[:20]},
                       "requests": {k: stats[k] for k in sorted(stats) if k != "key"}}
    return result


def validate(result: dict, where: str = "result") -> None:
    import jsonschema
    import yaml

    schema = yaml.safe_load(RESULT_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(result), key=lambda e: list(map(str, e.path)))
    if errors:
        raise DataError(f"{where}: not a valid result file: " + "; ".join(
            f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors))


def run(settings: Settings, inputs: Mapping, outputs: Mapping, *, model: str, metric: str, config_hash: str) -> dict:
    """Rule eval_metric (`agfsync metric`): results/{model}/{metric}.json (outputs["result"])
    from the per-shard files of both variants, inputs["base"] and inputs["agfsync"] (and, for
    mjhq_fid, the reference features inputs["reference"]). `config_hash`: the digest of the
    model's config recorded in the file (agfsync.core.config.config_digest)."""
    files = {variant: listed(inputs[variant]) for variant in VARIANTS}
    if metric == "mjhq_fid":
        files["reference"] = inputs["reference"]
    return write_metric(settings, model, metric, files, outputs["result"], config_hash)


def listed(value) -> list:
    """A named input as a list of paths (Snakemake gives one path as a str)."""
    return [value] if isinstance(value, str) else list(value)


def write_metric(settings: Settings, model: str, metric: str, inputs: dict, out_path, config_hash: str) -> dict:
    """`inputs` = {"base": [per-shard files], "agfsync": [...], "reference"?: npz}."""
    from agfsync.core.io import write_json

    if metric == "mjhq_fid":
        from agfsync.stages.evaluate import load_features

        features = {}
        for variant in VARIANTS:
            parts = [load_features(p) for p in inputs[variant]]
            parts = [p for p in parts if p["ids"]]
            if not parts:
                raise DataError(f"mjhq_fid ({model}, {variant}): no features in {len(inputs[variant])} shard file(s)")
            features[variant] = {"ids": sum((p["ids"] for p in parts), []), "groups": sum((p["groups"] for p in parts), []),
                                 "features": np.concatenate([p["features"] for p in parts])}
        result = fid_result(model, settings, config_hash, features, load_features(inputs["reference"]))
    else:
        rows = {variant: read_rows(inputs[variant]) for variant in VARIANTS}
        if metric == "tifa":
            result = tifa_result(model, settings, config_hash, rows)
        elif metric == "hpsv2":
            result = hps_result(model, settings, config_hash, rows)
        elif metric == "clipscore":
            result = mean_result("clipscore", "clip", model, settings, config_hash, rows,
                                 {"model": settings.scores.clip.model, "score": "max(100 * cos, 0)"})
        elif metric == "aesthetic":
            aesthetic = settings.scores.aesthetic
            result = mean_result("aesthetic", "aesthetic", model, settings, config_hash, rows,
                                 {"backbone": aesthetic.backbone, "head": Path(aesthetic.head).name,
                                  "scale": "x10 (0..100)"})
        else:
            raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    validate(result, str(out_path))
    write_json(out_path, result)
    base, tuned = result["variants"]["base"]["value"], result["variants"]["agfsync"]["value"]
    log.info("%s %s: base %.4f, agfsync %.4f (difference %+.4f) over %d prompts", model, metric, base, tuned,
             tuned - base, result["count"]["prompts"])
    return result


def interleave_groups(records: list[dict]) -> list[dict]:
    """Round robin over groups (styles, categories) in file order, so that the first N
    records of a benchmark cover its groups evenly (the HPS v2 file is 800 anime first)."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record["group"], []).append(record)
    out, queues = [], [list(g) for g in groups.values()]
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out
