"""VLM judge (the paper's GPT-4V comparison): base vs AGFSync, pairwise, per prompt.

For eval.judge.max_pairs prompts of eval.judge.benchmark, taken round robin over its
groups (styles, categories; agfsync.stages.metrics.interleave_groups), the judge
sees the prompt and the two images generated from the same seed (agfsync.stages.evaluate), in an
order drawn per pair from (seed, "judge", model, prompt id) so that position bias cancels
out, and answers a JSON object {"winner": "A" | "B" | "tie", "reason": "..."}.
Requests go through agfsync.llm.client like the LLM stage: any OpenAI-compatible vision endpoint,
the on-disk cache (a rerun sends nothing), retries, a request budget, repair re-asks on
a bad answer, then skip-with-reason. Results: AGFSync win / tie / loss rates over the
judged pairs, each with a Wilson score interval at eval.judge.confidence.

Entry point: `run(settings, inputs, outputs, model=, config_hash=)`, called by the rule's
script (rule eval_judge) and by `agfsync judge`.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import TYPE_CHECKING

from agfsync.core.secrets import secret_values
from agfsync.llm.answers import BadOutput, ask_json, check_yield, extract_json, run_concurrently, tally_failures
from agfsync.llm.base import Reply, Request
from agfsync.llm.client import LLMClient
from agfsync.core.seeds import derive_seed

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

log = logging.getLogger(__name__)

SYSTEM = (
    "You are an expert judge of text-to-image generation. You compare two images generated from the same "
    "text prompt and decide which one better matches the prompt (every object, attribute, count and relation) "
    "and, secondarily, which has higher visual quality and aesthetics."
)
INSTRUCTION = (
    "Prompt: \"{prompt}\"\n\nImage A is the first image, image B the second. Which image is better for this "
    "prompt? Answer with a JSON object only: {{\"winner\": \"A\" | \"B\" | \"tie\", \"reason\": \"<one sentence>\"}}."
)
OUTCOMES = ("win", "tie", "loss")


def data_url(image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def agfsync_first(seed: int, model: str, prompt_id: str) -> bool:
    """Is the AGFSync image shown as image A for this pair?"""
    return derive_seed(seed, "judge", model, prompt_id) % 2 == 1


def build_request(seed: int, model: str, record: dict, image_a, image_b) -> Request:
    content = [
        {"type": "text", "text": INSTRUCTION.format(prompt=record["prompt"])},
        {"type": "image_url", "image_url": {"url": data_url(image_a)}},
        {"type": "image_url", "image_url": {"url": data_url(image_b)}},
    ]
    return Request(key=f"judge/{model}/{record['id']}",
                   messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": content}),
                   seed=derive_seed(seed, "judge-request", model, record["id"]))


def parse_verdict(reply: Reply) -> str:
    """'A', 'B' or 'tie', or BadOutput naming what is wrong."""
    obj = extract_json(reply)
    if "winner" not in obj:
        raise BadOutput(f"missing field 'winner' (got fields: {', '.join(sorted(obj)) or 'none'})")
    value = obj["winner"]
    if not isinstance(value, str):
        raise BadOutput(f"'winner' must be \"A\", \"B\" or \"tie\", got {value!r}")
    normal = value.strip().lower().removeprefix("image").strip()
    if normal in ("a", "b"):
        return normal.upper()
    if normal in ("tie", "equal", "draw", "both"):
        return "tie"
    raise BadOutput(f"'winner' must be \"A\", \"B\" or \"tie\", got {value!r}")


def outcome_for_agfsync(verdict: str, agfsync_is_a: bool) -> str:
    if verdict == "tie":
        return "tie"
    return "win" if (verdict == "A") == agfsync_is_a else "loss"


def wilson(successes: int, total: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if total == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarise(outcomes: dict[str, str], confidence: float) -> dict:
    counts = {name: sum(1 for o in outcomes.values() if o == name) for name in OUTCOMES}
    total = sum(counts.values())
    out = {"pairs_judged": total, "counts": counts, "confidence": confidence}
    for name in OUTCOMES:
        low, high = wilson(counts[name], total, confidence)
        out[name] = {"rate": counts[name] / total if total else None, "ci": [low, high]}
    return out


def judge_pairs(settings: Settings, model: str, records: list[dict], images: dict[str, tuple], *,
                client: LLMClient | None = None):
    """Ask the judge of eval.judge.llm about each record; `images[id]` = (base image, agfsync
    image). Returns (outcome per prompt id, skipped {id: reasons}, client stats).

    Fails (agfsync.llm.answers.YieldTooLow) when no pair was judged, or fewer than
    eval.judge.llm.min_yield of them, naming the causes (outages are not cached)."""
    seed = settings.seed
    if client is None:
        client = LLMClient(settings.eval.judge.llm, stage="judge", cache_path=f"{settings.llm_cache_dir}/judge.jsonl",
                           secrets=secret_values(settings.to_dict()))

    def ask(record):
        base, tuned = images[record["id"]]
        first = agfsync_first(seed, model, record["id"])
        request = build_request(seed, model, record, tuned if first else base, base if first else tuned)
        return record["id"], first, ask_json(client, request, parse_verdict)

    outcomes, skipped, seen = {}, {}, []
    for prompt_id, first, outcome in run_concurrently(ask, records, client.settings.concurrency):
        seen.append(outcome)
        if outcome.ok:
            outcomes[prompt_id] = outcome_for_agfsync(outcome.value, first)
        else:
            skipped[prompt_id] = outcome.reasons
            log.warning("judge: %s skipped: %s", prompt_id, "; ".join(outcome.reasons))
    client.log_summary()
    check_yield("judge", produced=len(outcomes), asked=len(records), unit="pairs", tally=tally_failures(seen),
                requests="pairs", min_yield=client.settings.min_yield, section="eval.judge")
    return outcomes, skipped, client.stats.as_dict()


def run(settings: Settings, inputs: Mapping, outputs: Mapping, *, model: str, config_hash: str,
        hub: Mapping | None = None) -> dict:
    """Rule eval_judge (`agfsync judge`): results/{model}/judge.json (outputs["result"]) from the
    image shards of both variants of eval.judge.benchmark, inputs["base"] and inputs["agfsync"],
    and its prompts, inputs["prompts"]. `config_hash`: the digest of the model's config
    recorded in the file (agfsync.core.config.config_digest). `hub`: the hub repositories of the
    model's config, whose commits go into provenance.hub (None: left out)."""
    from agfsync.stages.metrics import listed

    return write_judge(settings, model, listed(inputs["base"]), listed(inputs["agfsync"]), inputs["prompts"],
                       outputs["result"], config_hash, hub=hub)


def write_judge(settings: Settings, model: str, base_shards: list, tuned_shards: list, prompts_path, out_path,
                config_hash: str, *, hub: Mapping | None = None) -> dict:
    from agfsync.core.io import DataError, read_jsonl, write_json
    from agfsync.core.shards import Shard
    from agfsync.stages.metrics import interleave_groups, judge_result, validate

    judge = settings.eval.judge
    records = interleave_groups(read_jsonl(prompts_path, required=("id", "prompt", "group")))
    if judge.max_pairs:
        records = records[: judge.max_pairs]
    wanted = {r["id"] for r in records}
    images: dict[str, list] = {pid: [None, None] for pid in wanted}
    for slot, paths in enumerate((base_shards, tuned_shards)):
        for path in paths:
            with Shard(path) as shard:
                for row in shard.rows:
                    if row["prompt_id"] in wanted:
                        images[row["prompt_id"]][slot] = shard.image(row)
    missing = sorted(pid for pid, pair in images.items() if None in pair)
    if missing:
        raise DataError(f"judge ({model}): no base or agfsync image for {len(missing)} prompt(s), e.g. {missing[0]}")
    outcomes, skipped, stats = judge_pairs(settings, model, records, {k: tuple(v) for k, v in images.items()})
    result = judge_result(model, settings, config_hash, summarise(outcomes, judge.confidence), skipped, stats)
    if hub is not None:
        from agfsync.core.provenance import hub_commits

        result["provenance"]["hub"] = hub_commits(hub)
    validate(result, str(out_path))
    write_json(out_path, result)
    return result
