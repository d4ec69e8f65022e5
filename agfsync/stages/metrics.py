"""Result files results/{model}/{metric}.json (rule eval_metric): base and AGFSync side
by side, the difference (AGFSync - base), counts, benchmark version, implementation and
the config hash. Format: agfsync/core/schemas/result.schema.yaml. Pure aggregation over the
per-image score files; only mjhq_fid imports torch (torchmetrics' Fréchet distance).

  tifa       TIFA score = mean over prompts of the fraction of the prompt's questions
             answered correctly; accuracy per element type and per source (agfsync.stages.tifa_results)
  clipscore  mean CLIP score of the TIFA images (the paper's TIFA table reports it)
  aesthetic  mean LAION aesthetic score (x10, as the scores stage) of the TIFA images
  proxy      mean over the TIFA images of the stage-3 weighted total (scores.weights over the
             vqa, clip and aesthetic sub-scores, agfsync.core.pairs.weighted_total): the
             quantity pair selection maximised
  gold       eval.tifa.gold only: gold accuracy, the TIFA score with the world's oracle as the
             answerer (agfsync.stages.tifa_results)
  hpsv2      per style, mean of 80-image chunk means; average over styles (agfsync.models.hps)
  mjhq_fid   FID per category and overall, generated vs reference images (agfsync.models.fid)
  pickscore, imagereward, hpsv21, vqascore
             the reward models (agfsync.core.rewards), on the images of eval.<reward>.benchmark:
             the mean reward, per group too; hpsv21 on the HPS v2 benchmark aggregates as hpsv2.
             Images an endpoint could not score (VQAScore, backend endpoint) leave their prompt
             out of both variants; `count.skipped_prompts` says how many
  judge      AGFSync win / tie / loss rates from the VLM judge (agfsync.stages.judge)

Every difference over paired prompts (all but mjhq_fid and judge) carries a paired
bootstrap CI over prompts, each variant's value a CI of its mean (agfsync.stages.result_parts).

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

from agfsync.core.benchmarks import METRICS, NAMES, SOURCE, VARIANTS, metrics_for  # noqa: F401 (re-exported)
from agfsync.core.io import DataError, read_jsonl
from agfsync.core.pairs import SUBSCORES, weighted_total
from agfsync.core.rewards import NAMES as REWARD_NAMES
from agfsync.core.rewards import REWARDS, UNITS
from agfsync.stages.result_parts import add_intervals, check_same_prompts, envelope  # noqa: F401 (re-exported)
from agfsync.stages.tifa_results import gold_result, tifa_result  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

log = logging.getLogger(__name__)

RESULT_SCHEMA = Path(__file__).resolve().parents[1] / "core" / "schemas" / "result.schema.yaml"


# What each metric reads of the per-image rows (an older scores file lacks vqa and gold_correct:
# the error names the file and the line, and rerunning its eval_score job adds them).
FIELDS = {"tifa": ("correct", "element_types"), "clipscore": ("clip",), "aesthetic": ("aesthetic",),
          "proxy": SUBSCORES, "gold": ("gold_correct", "element_types"), "hpsv2": ("hps",),
          **{reward: ("reward",) for reward in REWARDS}}


def read_rows(paths, fields=()) -> list[dict]:
    rows = []
    for path in paths:
        rows += read_jsonl(path, required=("prompt_id", "group", *fields))
    return rows


def _group_diff(details: dict[str, dict], key: str, field: str) -> dict[str, float]:
    base, tuned = details["base"][key], details["agfsync"][key]
    return {g: tuned[g][field] - base[g][field] for g in sorted(base) if g in tuned}


def mean_result(metric: str, field: str, model: str, settings: Settings, config_hash: str, rows_by_variant,
                implementation) -> dict:
    check_same_prompts(rows_by_variant, f"{metric} ({model})")
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
    bench = getattr(settings.eval, metric).benchmark if metric in REWARDS else SOURCE[metric]
    result = envelope(metric, model, settings, config_hash,
                      benchmark={"name": NAMES[bench], "version": getattr(getattr(settings.eval, bench), "version",
                                                                          NAMES[bench])},
                      higher_is_better=True, values=values, by_group=by_group, prompts=n, images=2 * n,
                      implementation=implementation)
    per_prompt = {v: {r["prompt_id"]: float(r[field]) for r in rows} for v, rows in rows_by_variant.items()}
    return add_intervals(result, settings.seed, per_prompt["base"], per_prompt["agfsync"])


def proxy_result(model: str, settings: Settings, config_hash: str, rows_by_variant) -> dict:
    """The stage-3 weighted total of every TIFA image (its vqa, clip and aesthetic sub-scores),
    computed as pair selection computes it."""
    weights = settings.scores.weights.to_dict()
    rows = {v: [{**r, "proxy": weighted_total(r, weights)} for r in items] for v, items in rows_by_variant.items()}
    return mean_result("proxy", "proxy", model, settings, config_hash, rows, {
        "weights": weights, "total": "agfsync.core.pairs.weighted_total, as pair selection (stage 4)",
        "vqa": f"stage-3 VQA score of the TIFA questions ({settings.scores.vqa.model}, method "
               f"{settings.scores.vqa.method}, choice likelihood {settings.scores.vqa.choice_likelihood})",
        "clip_model": settings.scores.clip.model,
        "aesthetic_head": Path(settings.scores.aesthetic.head).name})


def _paired(rows_by_variant, field: str) -> float:
    base = {r["prompt_id"]: r[field] for r in rows_by_variant["base"]}
    tuned = {r["prompt_id"]: r[field] for r in rows_by_variant["agfsync"]}
    return float(np.mean([tuned[k] > base[k] for k in base]))


def reward_result(metric: str, model: str, settings: Settings, config_hash: str, rows_by_variant) -> dict:
    """A reward model's result: the prompts every variant has a reward for (an endpoint may have
    skipped some), the HPS v2 protocol for hpsv21 on its own benchmark, else the mean."""
    section = getattr(settings.eval, metric)
    missing = {r["prompt_id"] for rows in rows_by_variant.values() for r in rows if r["reward"] is None}
    rows = {v: [r for r in items if r["prompt_id"] not in missing] for v, items in rows_by_variant.items()}
    implementation = {"reward": REWARD_NAMES[metric], "score": UNITS[metric],
                      **{k: (Path(v).name if k in ("checkpoint", "med_config") else v)
                         for k, v in section.to_dict().items() if k not in ("enabled", "benchmark", "llm")}}
    if metric == "vqascore" and section.backend == "endpoint":
        implementation.update(model=section.llm.model, provider=section.llm.provider)
    if metric == "hpsv21" and section.benchmark == "hpsv2":
        result = hps_result(model, settings, config_hash, rows, metric="hpsv21", field="reward", version="v2.1",
                            implementation=implementation)
    else:
        result = mean_result(metric, "reward", model, settings, config_hash, rows, implementation)
    result["count"]["skipped_prompts"] = len(missing)
    return result


def hps_result(model: str, settings: Settings, config_hash: str, rows_by_variant, *, metric: str = "hpsv2",
               field: str = "hps", version: str | None = None, implementation: dict | None = None) -> dict:
    """The HPS v2 protocol (per style, mean of 80-image chunk means; average over styles) over
    `field` of the rows: HPS v2 (eval.hpsv2), or HPS v2.1 on the same benchmark (hpsv21)."""
    check_same_prompts(rows_by_variant, f"{metric} ({model})")
    values, weighted = {}, {}
    for variant, rows in rows_by_variant.items():
        order = {style: [] for style in hps.STYLES}
        for r in sorted(rows, key=lambda r: int(r["prompt_id"].rsplit("-", 1)[1])):  # "{style}-{index}": benchmark order
            order.setdefault(r["group"], []).append(r)
        order = {s: v for s, v in order.items() if v}
        aggregated = hps.aggregate({s: [r[field] for r in v] for s, v in order.items()})
        values[variant] = {"value": aggregated["average"], "details": {"styles": aggregated["styles"]}}
        weighted[variant] = _protocol_weighted(order, len(rows), field)
    values["agfsync"]["details"]["better_than_base_fraction"] = _paired(rows_by_variant, field)
    by_style = {s: values["agfsync"]["details"]["styles"][s]["mean"] - values["base"]["details"]["styles"][s]["mean"]
                for s in values["base"]["details"]["styles"]}
    if implementation is None:
        hpsv2 = settings.eval.hpsv2
        version = hpsv2.version
        implementation = {"model": hpsv2.model, "checkpoint": Path(hpsv2.checkpoint).name}
    implementation = {**implementation, "score": "100 * cos", "chunk": hps.CHUNK,
                      "preprocess": "longest side to input size (bicubic), pad to square, OpenAI mean/std"}
    n = len(rows_by_variant["base"])
    result = envelope(metric, model, settings, config_hash, benchmark={"name": NAMES["hpsv2"], "version": version},
                      higher_is_better=True, values=values, by_group=by_style, prompts=n, images=2 * n,
                      implementation=implementation)
    return add_intervals(result, settings.seed, weighted["base"], weighted["agfsync"])


def _protocol_weighted(order: dict[str, list[dict]], n: int, field: str = "hps") -> dict[str, float]:
    """Per prompt, n * w * score, where w is the prompt's weight in the protocol's average (mean
    over styles of the mean of chunk means): their mean is the HPS v2 value, so the paired
    bootstrap over prompts resamples exactly that linear statistic (w = 1/n when every style has
    the same number of full chunks, as the full benchmark)."""
    out = {}
    for rows in order.values():
        chunks = [rows[i : i + hps.CHUNK] for i in range(0, len(rows), hps.CHUNK)]
        for chunk in chunks:
            for r in chunk:
                out[r["prompt_id"]] = n * float(r[field]) / (len(order) * len(chunks) * len(chunk))
    return out


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
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(result), key=lambda e: list(map(str, e.path)))
    if errors:
        raise DataError(f"{where}: not a valid result file: " + "; ".join(
            f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors))


def run(settings: Settings, inputs: Mapping, outputs: Mapping, *, model: str, metric: str, config_hash: str,
        hub: Mapping | None = None) -> dict:
    """Rule eval_metric (`agfsync metric`): results/{model}/{metric}.json (outputs["result"])
    from the per-shard files of both variants, inputs["base"] and inputs["agfsync"] (and, for
    mjhq_fid, the reference features inputs["reference"]). `config_hash`: the digest of the
    model's config recorded in the file (agfsync.core.config.config_digest). `hub`: the hub
    repositories and revisions of the model's config (agfsync.core.downloads.hub_repos), whose
    commits go into provenance.hub (None: left out)."""
    files = {variant: listed(inputs[variant]) for variant in VARIANTS}
    if metric == "mjhq_fid":
        files["reference"] = inputs["reference"]
    return write_metric(settings, model, metric, files, outputs["result"], config_hash, hub=hub)


def listed(value) -> list:
    """A named input as a list of paths (Snakemake gives one path as a str)."""
    return [value] if isinstance(value, str) else list(value)


def write_metric(settings: Settings, model: str, metric: str, inputs: dict, out_path, config_hash: str, *,
                 hub: Mapping | None = None) -> dict:
    """`inputs` = {"base": [per-shard files], "agfsync": [...], "reference"?: npz}."""
    from agfsync.core.io import write_json

    if metric == "mjhq_fid":
        from agfsync.stages.evaluate import load_features

        features, reference = {}, load_features(inputs["reference"])
        for variant in VARIANTS:
            parts = [load_features(p) for p in inputs[variant]]
            for path, part in zip(inputs[variant], parts):
                if not part["ids"]:
                    continue
                differ = sorted(k for k in set(part["info"]) | set(reference["info"])
                                if part["info"].get(k) != reference["info"].get(k))
                if differ:  # features of another network or resize are not comparable
                    raise DataError(f"mjhq_fid ({model}, {variant}): {path} was extracted with another {differ[0]} than "
                                    f"the reference ({part['info'].get(differ[0])!r} vs "
                                    f"{reference['info'].get(differ[0])!r}); rerun both with the same eval.mjhq")
            parts = [p for p in parts if p["ids"]]
            if not parts:
                raise DataError(f"mjhq_fid ({model}, {variant}): no features in {len(inputs[variant])} shard file(s)")
            features[variant] = {"ids": sum((p["ids"] for p in parts), []), "groups": sum((p["groups"] for p in parts), []),
                                 "features": np.concatenate([p["features"] for p in parts])}
        result = fid_result(model, settings, config_hash, features, reference)
    else:
        if metric not in FIELDS:
            raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
        rows = {variant: read_rows(inputs[variant], FIELDS[metric]) for variant in VARIANTS}
        if metric == "tifa":
            result = tifa_result(model, settings, config_hash, rows)
        elif metric == "gold":
            result = gold_result(model, settings, config_hash, rows)
        elif metric == "proxy":
            result = proxy_result(model, settings, config_hash, rows)
        elif metric == "hpsv2":
            result = hps_result(model, settings, config_hash, rows)
        elif metric in REWARDS:
            result = reward_result(metric, model, settings, config_hash, rows)
        elif metric == "clipscore":
            result = mean_result("clipscore", "clip", model, settings, config_hash, rows,
                                 {"model": settings.scores.clip.model, "score": "max(100 * cos, 0)"})
        elif metric == "aesthetic":
            aesthetic = settings.scores.aesthetic
            result = mean_result("aesthetic", "aesthetic", model, settings, config_hash, rows,
                                 {"backbone": aesthetic.backbone, "head": Path(aesthetic.head).name,
                                  "scale": "x10 (0..100)"})
    if hub is not None:
        from agfsync.core.provenance import hub_commits

        result["provenance"]["hub"] = hub_commits(hub)
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
