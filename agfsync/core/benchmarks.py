"""Evaluation benchmarks (stage 6): their prompt lists, read from the downloaded files,
and how they are sharded. Pure: no torch, so `snakemake -n` stays fast.

Every benchmark becomes one list of records {"id", "prompt", "group", ...} in a fixed
order (results/eval/{bench}/prompts.jsonl), split into shards of eval.shard_size prompts:
  tifa   TIFA v1.0: prompts in the order of tifa_v1.0_text_inputs.json, each with its
         questions from tifa_v1.0_question_answers.json (group = the TIFA source,
         the id's prefix: coco, partiprompt, paintskill, drawbench; the world benchmark's
         category), and its `split` when the text inputs carry one (world: seen, unseen);
  hpsv2  HPS v2: {prompts_dir}/{style}.json, each a JSON list of 800 prompt strings, styles
         anime, concept-art, paintings, photo in that order (group = style, id =
         "{style}-{index:03d}", the index in the style's file);
  mjhq   MJHQ-30K: meta_data.json maps image id -> {"category", "prompt"}; per category
         (animals ... vehicles), ids in sorted order (group = category).
Every id is checked (agfsync.core.ids: a safe name, unique), errors naming file and record.
The shard count is fixed when the workflow is parsed: from the official benchmark sizes,
or the configured subset sizes, so a dry run lists every job before anything is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

from agfsync.core.ids import check_id, check_ids
from agfsync.core.io import DataError, read_json
from agfsync.core.rewards import REWARDS, enabled_rewards, reward_bench
from agfsync.core.tifa import load_questions

BENCHMARKS = ("tifa", "hpsv2", "mjhq")
VARIANTS = ("base", "agfsync")
TIFA_SIZE = 4081
HPS_PER_STYLE = 800
STYLES = ("anime", "concept-art", "paintings", "photo")  # HPS v2's four styles, in its order
CHUNK = 80  # HPS v2 averages a style over chunks of 80 images (its official protocol)
MJHQ_CATEGORIES = ("animals", "art", "fashion", "food", "indoor", "landscape", "logo", "people", "plants", "vehicles")
MJHQ_PER_CATEGORY = 3000
NAMES = {"tifa": "TIFA", "hpsv2": "HPS v2", "mjhq": "MJHQ-30K"}
# The metrics (results/{model}/{metric}.json, agfsync.stages.metrics) and the benchmark whose
# images each is computed from; the judge compares images of eval.judge.benchmark.
#   proxy  the stage-3 weighted total (scores.weights) of each TIFA image: what pair selection optimised
#   gold   eval.tifa.gold only: the world's oracle answers the TIFA questions (gold accuracy)
#   the reward models (agfsync.core.rewards: pickscore, imagereward, hpsv21, vqascore) score the
#   images of the benchmark their section names (eval.<reward>.benchmark): metric_source
METRICS = ("tifa", "clipscore", "aesthetic", "proxy", "gold", "hpsv2", "mjhq_fid", *REWARDS, "judge")
SOURCE = {"tifa": "tifa", "clipscore": "tifa", "aesthetic": "tifa", "proxy": "tifa", "gold": "tifa",
          "hpsv2": "hpsv2", "mjhq_fid": "mjhq"}


def enabled(cfg: dict) -> list[str]:
    return [name for name in BENCHMARKS if cfg["eval"][name]["enabled"]]


def metric_source(cfg: dict, metric: str) -> str:
    """The benchmark whose images a metric is computed from."""
    return reward_bench(cfg, metric) if metric in REWARDS else SOURCE[metric]


def metrics_for(cfg: dict) -> list[str]:
    """The metrics a config evaluates (their benchmarks enabled; gold only with eval.tifa.gold;
    a reward model only when its section is enabled)."""
    rewards = enabled_rewards(cfg)
    out = [m for m in METRICS if m != "judge" and (m not in REWARDS or m in rewards)
           and cfg["eval"][metric_source(cfg, m)]["enabled"] and (m != "gold" or cfg["eval"]["tifa"].get("gold"))]
    return out + (["judge"] if cfg["eval"]["judge"]["enabled"] else [])


def mjhq_categories(cfg: dict) -> list[str]:
    return list(cfg["eval"]["mjhq"]["categories"] or MJHQ_CATEGORIES)


def max_prompts(cfg: dict, bench: str) -> int:
    """Upper bound on the benchmark's prompts under this config (known at parse time)."""
    section = cfg["eval"][bench]
    if bench == "tifa":
        return section["max_prompts"] or TIFA_SIZE
    if bench == "hpsv2":
        return len(STYLES) * (section["per_style"] or HPS_PER_STYLE)
    if bench == "mjhq":
        return len(mjhq_categories(cfg)) * (section["per_category"] or MJHQ_PER_CATEGORY)
    raise ValueError(f"unknown benchmark {bench!r} (known: {', '.join(BENCHMARKS)})")


def num_eval_shards(cfg: dict, bench: str) -> int:
    return max(1, math.ceil(max_prompts(cfg, bench) / cfg["eval"]["shard_size"]))


def load_tifa(section: dict) -> list[dict]:
    inputs_path, questions_path = section["text_inputs"], section["questions"]
    inputs = read_json(inputs_path)
    if not isinstance(inputs, list):
        raise DataError(f"{inputs_path}: expected a JSON list of {{'id', 'caption'}} records")
    questions = {entry["id"]: entry for entry in load_questions(questions_path)}
    records = []
    for number, item in enumerate(inputs):
        if not isinstance(item, dict) or "id" not in item or "caption" not in item:
            raise DataError(f"{inputs_path}, record {number}: expected {{'id', 'caption'}}, got {item!r:.80}")
        prompt_id = check_id(item["id"], f"{inputs_path}, record {number}", "id")
        entry = questions.get(prompt_id)
        if entry is None:
            raise DataError(f"{inputs_path}, record {number} (id {prompt_id}): no questions in {questions_path}")
        record = {"id": prompt_id, "prompt": item["caption"], "group": prompt_id.split("_")[0], "qa": entry["qa"]}
        if "split" in item:  # the world benchmark's seen / unseen color-shape pairs (agfsync.world.benchmark)
            if not isinstance(item["split"], str) or not item["split"].strip():
                raise DataError(f"{inputs_path}, record {number} (id {prompt_id}): 'split' must be a non-empty "
                                f"string, got {item['split']!r}")
            record["split"] = item["split"]
        records.append(record)
    check_ids(records, str(inputs_path), (f"record {number}" for number in range(len(records))), what="id")
    limit = section["max_prompts"]
    return records[:limit] if limit else records


def load_hpsv2(section: dict) -> list[dict]:
    records = []
    for style in STYLES:
        path = Path(section["prompts_dir"]) / f"{style}.json"
        prompts = read_json(path)
        if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise DataError(f"{path}: expected a JSON list of non-empty prompt strings (HPS v2 benchmark format)")
        limit = section["per_style"] or len(prompts)
        if len(prompts) < limit:
            raise DataError(f"{path}: has {len(prompts)} prompts, eval.hpsv2.per_style asks for {limit}")
        records += [{"id": f"{style}-{i:03d}", "prompt": p, "group": style} for i, p in enumerate(prompts[:limit])]
    return records


def load_mjhq(section: dict, categories: list[str]) -> list[dict]:
    path = section["meta"]
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object mapping image id -> {{'category', 'prompt'}}")
    by_category: dict[str, list[dict]] = {c: [] for c in categories}
    for image_id in sorted(meta):
        entry = meta[image_id]
        if not isinstance(entry, dict) or "category" not in entry or "prompt" not in entry:
            raise DataError(f"{path}, record {image_id!r}: expected {{'category', 'prompt'}}")
        if entry["category"] in by_category:
            by_category[entry["category"]].append(
                {"id": check_id(image_id, f"{path}, record {image_id!r}", "id"), "prompt": entry["prompt"],
                 "group": entry["category"]})
    records = []
    for category, items in by_category.items():
        limit = section["per_category"] or len(items)
        if len(items) < max(limit, 2):
            raise DataError(f"{path}: category {category!r} has {len(items)} images, "
                            f"eval.mjhq.per_category asks for {limit} (FID needs at least 2)")
        records += items[:limit]
    return records


def load_benchmark(cfg: dict, bench: str) -> list[dict]:
    """The benchmark's evaluation records, in their fixed order."""
    section = cfg["eval"][bench]
    if bench == "tifa":
        records = load_tifa(section)
    elif bench == "hpsv2":
        records = load_hpsv2(section)
    elif bench == "mjhq":
        records = load_mjhq(section, mjhq_categories(cfg))
    else:
        raise ValueError(f"unknown benchmark {bench!r} (known: {', '.join(BENCHMARKS)})")
    bound = max_prompts(cfg, bench)
    if len(records) > bound:  # cannot happen with the official files; guards a hand-made one
        raise DataError(f"benchmark {bench}: {len(records)} prompts, more than the {bound} its shards were sized for")
    check_ids(records, f"benchmark {bench}", (f"record {number}" for number in range(len(records))), what="id")
    return records
