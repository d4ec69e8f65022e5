"""Stage 6: per-image scores of the reward models (rules eval_reward, eval_reward_endpoint).

One job per reward model, variant and image shard of the benchmark eval.<reward>.benchmark
names (agfsync.core.rewards): every image of the shard scored against its prompt, written
atomically as rows {"prompt_id", "group", "seed", "reward"} to
results/{model}/eval/{variant}/{bench}/<reward>-{shard}.jsonl. The models load through
agfsync.models.rewards; VQAScore with backend endpoint asks an OpenAI-compatible vision
endpoint for the answer's log-probability (agfsync.stages.vqascore_endpoint) through the LLM
stage's client, cache (one file per job under llm_cache_dir/vqascore/), budget and retries:
an image the endpoint could not score gets "reward": null and its reasons ("skipped"), and
the metric leaves its prompt out of both variants, saying how many.

Entry point: `run(settings, inputs, outputs, reward=, bench=, ...)`, called by the rules'
script and by `agfsync eval-reward`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agfsync.core.io import write_jsonl
from agfsync.core.rewards import NAMES, REWARDS

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

log = logging.getLogger(__name__)


def run(settings: Settings, inputs: Mapping, outputs: Mapping, *, reward: str, bench: str, progress: bool = True,
        model: str = "model", variant: str = "variant", shard: str = "00000", **wildcards) -> int:
    """The rewards of the image shard inputs["shard"] (prompts: inputs["prompts"]) into
    outputs["scores"]. model, variant and shard name the job (and the endpoint's cache file)."""
    if reward not in REWARDS:
        raise ValueError(f"unknown reward model {reward!r} (known: {', '.join(REWARDS)})")
    section = getattr(settings.eval, reward)
    if section.benchmark != bench:
        raise ValueError(f"{reward} scores the images of {section.benchmark} (eval.{reward}.benchmark), not of {bench}")
    return score_shard(settings, reward, inputs["shard"], inputs["prompts"], outputs["scores"], progress=progress,
                       job=f"{model}/{variant}/{bench}-{shard}")


def score_shard(settings: Settings, reward: str, shard_path, prompts_path, out_path, *, progress: bool = True,
                job: str = "job") -> int:
    from agfsync.stages.evaluate import open_shard

    section = getattr(settings.eval, reward)
    started = time.perf_counter()
    with open_shard(shard_path, prompts_path) as (shard, items):
        endpoint = reward == "vqascore" and section.backend == "endpoint"
        if not items:
            rows = []
        elif endpoint:
            rows = _endpoint_rows(settings, section, shard, items, job)
        else:
            rows = _local_rows(settings, reward, section, shard, items, progress, str(shard_path))
    write_jsonl(out_path, rows)
    log.info("eval %s: %s: %d images in %.1f s", reward, shard_path, len(rows), time.perf_counter() - started)
    return len(rows)


def _row(record: dict, row: dict, value) -> dict:
    return {"prompt_id": record["id"], "group": record["group"], "seed": row["seed"],
            "reward": None if value is None else float(value)}


def _local_rows(settings: Settings, reward: str, section, shard, items, progress: bool, where: str) -> list[dict]:
    from tqdm import tqdm

    from agfsync.models.rewards import load_reward_scorer

    scorer = load_reward_scorer(reward, section, settings.device)
    rows = []
    for record, row in tqdm(items, desc=f"{reward} {where}", unit="image", disable=not progress, mininterval=2):
        rows.append(_row(record, row, scorer.score([shard.image(row)], record["prompt"])[0]))
    return rows


def _endpoint_rows(settings: Settings, section, shard, items, job: str) -> list[dict]:
    from agfsync.core.ids import check_id
    from agfsync.core.secrets import secret_values
    from agfsync.stages.vqascore_endpoint import endpoint_scores

    if section.llm is None:
        raise ValueError("eval.vqascore.llm: backend 'endpoint' needs an llm section (a vision endpoint with logprobs)")
    cache = f"{settings.llm_cache_dir}/vqascore/{check_id(job.replace('/', '-'), 'eval_reward', 'job name')}.jsonl"
    scores, skipped, stats = endpoint_scores(
        section.llm, [(record["id"], shard.image(row), record["prompt"]) for record, row in items],
        seed=settings.seed, cache_path=cache, secrets=secret_values(settings.to_dict()),
        question=section.question, answer=section.answer)
    log.info("%s via %s: %d scored, %d skipped; requests %s", NAMES["vqascore"], section.llm.model, len(scores),
             len(skipped), {k: v for k, v in sorted(stats.items()) if k != "key"})
    rows = []
    for record, row in items:
        out = _row(record, row, scores.get(record["id"]))
        if record["id"] in skipped:
            out["skipped"] = list(skipped[record["id"]])
        rows.append(out)
    return rows
