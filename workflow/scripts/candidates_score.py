"""Rule candidates_score: VQA, CLIP and aesthetic scores of one shard (agfsync.scoring.score_shard)."""

from agfsync.models import start_model_job
from agfsync.logs import job_logging
from agfsync.scoring import score_shard

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    start_model_job(snakemake.params.cfg, getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (GPUs, cpu_threads)
    score_shard(snakemake.params.cfg, snakemake.input.shard, snakemake.input.qa, snakemake.output[0])  # noqa: F821
