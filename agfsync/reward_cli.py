"""`agfsync eval-reward` (pure at import, as agfsync.cli): the per-image scores of one reward
model on one evaluation shard (agfsync.stages.rewards; rules eval_reward, eval_reward_endpoint)."""

from __future__ import annotations

from agfsync.core.benchmarks import BENCHMARKS
from agfsync.core.rewards import REWARDS


def add_parser(sub, stage_parser, func, log) -> None:
    """The `eval-reward` command, built with agfsync.cli's stage-parser helpers."""
    p = stage_parser(sub, "eval-reward", "stage 6: per-image rewards (PickScore, ImageReward, HPS v2.1, VQAScore) of a "
                     "shard", "Score every image of an evaluation shard against its prompt with the reward model of "
                     "eval.REWARD (its benchmark must be eval.REWARD.benchmark; VQAScore with backend endpoint asks "
                     "eval.vqascore.llm) and write JSONL rows {prompt_id, group, seed, reward} (rules eval_reward, "
                     "eval_reward_endpoint).", func)
    p.add_argument("--reward", required=True, choices=REWARDS, help="the reward model")
    p.add_argument("--bench", required=True, choices=BENCHMARKS, help="the benchmark of the shard")
    p.add_argument("--shard", required=True, help="evaluation shard .tar (from `agfsync eval-generate`)")
    p.add_argument("--prompts", required=True, help="the benchmark's prompts JSONL")
    p.add_argument("--out", required=True, help="output rewards JSONL")
    log(p)
