"""Rules eval_score_tifa, eval_score_hpsv2, eval_features_mjhq: per-image scores or FID
features of one evaluation shard (agfsync.evaluate)."""

import torch

from agfsync import evaluate
from agfsync.gpu_slots import bind_gpus
from agfsync.logs import job_logging

SCORERS = {
    "eval_score_tifa": evaluate.score_tifa_shard,
    "eval_score_hpsv2": evaluate.score_hps_shard,
    "eval_features_mjhq": evaluate.features_mjhq_shard,
}

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    bind_gpus(getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (one machine: devices no other job holds)
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    SCORERS[snakemake.rule](snakemake.params.cfg, snakemake.input.shard, snakemake.input.prompts,  # noqa: F821
                            snakemake.output[0])  # noqa: F821
