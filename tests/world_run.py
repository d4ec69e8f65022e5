"""The world demo's pipeline run stage by stage in the test process, on a reduced copy of
config/demo.yaml, for the semantic tests (tests/test_world_control.py): the same stage
functions the workflow's jobs call (agfsync.stages.*), the same settings each job sees
(tests/helpers.settings: what its rule declares), the world writer as the LLM, then gold
accuracy of base and fine-tuned UNet on the held-out benchmark (the world's oracle).

`prepare(cfg, root)` runs stages 1-4 once (prompts, QA, candidates, scores, pairs) and the
base model's held-out images; `train_and_evaluate(prepared, name, ...)` trains one variant
(a config change, a rewrite of the pairs, or a patch of the trainer) and returns the paired
gold difference against the base model (agfsync.core.stats.Interval).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from helpers import settings
from train_helpers import train_in_process

from agfsync.core import stats
from agfsync.core.config import load_config
from agfsync.core.io import read_jsonl, write_jsonl
from agfsync.core.shards import shard_name
from agfsync.llm.providers import register_local_server
from agfsync.stages import candidates, evaluate, pairs, prompts, qa, scoring, train
from agfsync.world import oracle
from agfsync.world.writer import WorldWriter

REPO = Path(__file__).resolve().parents[1]
MODEL = "world"


def reduced_config(per_category: int, steps: int | None = None, eval_prompts: int = 300, **train_over) -> dict:
    """config/demo.yaml with `per_category` prompts per category (6 categories), the demo's
    training unless overridden, the first `eval_prompts` held-out prompts, no trajectory."""
    cfg = copy.deepcopy(load_config(REPO / "config" / "demo.yaml"))
    for key in ("text_inputs", "questions"):
        cfg["eval"]["tifa"][key] = str(REPO / cfg["eval"]["tifa"][key])
    for section in ("vqa", "clip"):
        cfg["scores"][section]["model"] = str(REPO / cfg["scores"][section]["model"])
    cfg["scores"]["aesthetic"] = {k: str(REPO / v) for k, v in cfg["scores"]["aesthetic"].items()}
    cfg["models"][MODEL]["pretrained"] = str(REPO / cfg["models"][MODEL]["pretrained"])
    cfg["prompts"]["per_category"] = per_category
    cfg["eval"]["tifa"]["max_prompts"] = eval_prompts
    cfg["eval"]["trajectory"]["enabled"] = False
    cfg["train"]["snapshots"] = []
    if steps is not None:
        cfg["models"][MODEL]["train"]["steps"] = steps
    cfg["models"][MODEL]["train"].update(train_over)
    return cfg


@dataclass
class Prepared:
    cfg: dict
    root: Path
    pairs: Path
    eval_prompts: Path
    base_gold: np.ndarray
    winner_gold: float
    loser_gold: float


def _gold_of_images(cfg: dict, shard: Path, prompts_path: Path, out: Path) -> np.ndarray:
    evaluate.score_tifa_shard(settings(cfg, "eval_score", bench="tifa").scores, shard, prompts_path, out,
                              progress=False, gold=oracle.answer)
    return np.array([row["gold"] for row in read_jsonl(out)])


def _eval_images(cfg: dict, prompts_path: Path, out_dir: Path, variant: str, unet: str | None) -> Path:
    records = read_jsonl(prompts_path)
    shard = out_dir / f"eval-{variant}.tar"
    evaluate.generate_eval_shard(settings(cfg, "eval_generate", model=MODEL, bench="tifa", variant=variant),
                                 MODEL, "tifa", variant, records, shard, unet=unet, progress=False)
    return shard


def prepare(cfg: dict, root: Path) -> Prepared:
    register_local_server("world", WorldWriter)
    root.mkdir(parents=True, exist_ok=True)
    eval_prompts = root / "eval_prompts.jsonl"
    evaluate.run_prompts(settings(cfg, "eval_prompts", bench="tifa"), {}, {"prompts": eval_prompts}, bench="tifa")
    files = {name: root / f"{name}.jsonl" for name in ("prompts", "qa", "pairs")}
    prompts.run(settings(cfg, "prompts_generate"), {"eval_prompts": [str(eval_prompts)]},
                {"prompts": files["prompts"], "summary": root / "prompts_summary.json"})
    qa.run(settings(cfg, "qa_generate"), {"prompts": files["prompts"]},
           {"qa": files["qa"], "summary": root / "qa_summary.json"})
    count = len(read_jsonl(files["qa"]))
    size = cfg["candidates"]["shard_size"]
    shards, scores = [], []
    for index in range((count + size - 1) // size):
        shard, score = root / f"candidates-{shard_name(index)}.tar", root / f"scores-{shard_name(index)}.jsonl"
        candidates.run(settings(cfg, "candidates_generate", model=MODEL), {"qa": files["qa"]}, {"shard": shard},
                       model=MODEL, shard=index, progress=False)
        scoring.run(settings(cfg, "candidates_score"), {"shard": shard, "qa": files["qa"]}, {"scores": score},
                    progress=False)
        shards.append(str(shard))
        scores.append(str(score))
    pairs.run(settings(cfg, "pairs_select"), {"scores": scores, "shards": shards, "qa": files["qa"]},
              {"pairs": files["pairs"], "summary": root / "pairs_summary.json"})
    base = _gold_of_images(cfg, _eval_images(cfg, eval_prompts, root, "base", None), eval_prompts,
                           root / "eval-base.jsonl")
    winner, loser = _pair_gold(cfg, root, files["qa"], files["pairs"])
    return Prepared(cfg, root, files["pairs"], eval_prompts, base, winner, loser)


def _pair_gold(cfg: dict, root: Path, qa_path: Path, pairs_path: Path) -> tuple[float, float]:
    """Mean gold accuracy of the winners and of the losers (what the judges' preference is worth)."""
    from agfsync.core.shards import Shard

    questions = {r["id"]: r["qa"] for r in read_jsonl(qa_path)}
    golds = {"winner": [], "loser": []}
    for pair in read_jsonl(pairs_path):
        for side in golds:
            with Shard(pair[side]["shard"]) as shard:
                row = next(r for r in shard.rows if r["image"] == pair[side]["image"])
                golds[side].append(oracle.accuracy(shard.image(row), questions[pair["prompt_id"]]))
    return float(np.mean(golds["winner"])), float(np.mean(golds["loser"]))


def rewrite_pairs(prepared: Prepared, name: str, change) -> Path:
    """A copy of the pairs file with `change(list of pairs) -> list of pairs` applied."""
    out = prepared.root / f"pairs-{name}.jsonl"
    write_jsonl(out, change(read_jsonl(prepared.pairs)))
    return out


def train_and_evaluate(prepared: Prepared, name: str, *, cfg: dict | None = None, pairs_path: Path | None = None,
                       ) -> stats.Interval:
    """Train one variant on the prepared pairs (or `pairs_path`), evaluate gold on the held-out
    prompts with the base model's seeds: the paired difference AGFSync - base."""
    cfg = cfg or prepared.cfg
    work = prepared.root / name
    cache = work / "cache"
    train.run_cache(settings(cfg, "train_cache", model=MODEL), {"pairs": str(pairs_path or prepared.pairs)},
                    {"cache": cache}, model=MODEL)
    run = train_in_process(settings(cfg, "train_dpo", model=MODEL), cache, work / "agfsync", work / "checkpoints",
                           model=MODEL)
    assert run.returncode == 0, run.stderr[-3000:]
    shard = _eval_images(cfg, prepared.eval_prompts, work, "agfsync", str(work / "agfsync" / "unet"))
    tuned = _gold_of_images(cfg, shard, prepared.eval_prompts, work / "eval-agfsync.jsonl")
    result = stats.paired_delta(prepared.base_gold, tuned, seed=0)
    (work / "gold.json").write_text(json.dumps({"base": prepared.base_gold.mean(), "agfsync": tuned.mean(),
                                                **result.as_dict()}, indent=1))
    return result
