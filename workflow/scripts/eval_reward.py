"""Rules eval_reward and eval_reward_endpoint: the per-image scores of one reward model
(PickScore, ImageReward, HPS v2.1, VQAScore) on one evaluation shard
(agfsync.stages.rewards.run); the reward wildcard picks the model."""

from agfsync.core.jobs import job
from agfsync.stages import rewards

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    rewards.run(j.settings, j.inputs, j.outputs, **j.wildcards)
