"""Rules eval_score_tifa, eval_score_hpsv2, eval_features_mjhq: per-image scores or FID
features of one evaluation shard (agfsync.evaluate)."""

from agfsync import evaluate
from agfsync.models import start_model_job
from agfsync.logs import job_logging

SCORERS = {
    "eval_score_tifa": evaluate.score_tifa_shard,
    "eval_score_hpsv2": evaluate.score_hps_shard,
    "eval_features_mjhq": evaluate.features_mjhq_shard,
}

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    start_model_job(snakemake.params.cfg, getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (GPUs, cpu_threads)
    SCORERS[snakemake.rule](snakemake.params.cfg, snakemake.input.shard, snakemake.input.prompts,  # noqa: F821
                            snakemake.output[0])  # noqa: F821
