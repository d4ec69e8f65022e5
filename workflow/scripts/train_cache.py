"""Rule train_cache: latents and text embeddings of every pair, once (agfsync.train_data.build_train_cache)."""

from agfsync.models import start_model_job
from agfsync.logs import job_logging
from agfsync.train_data import build_train_cache

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    start_model_job(snakemake.params.cfg, getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (GPUs, cpu_threads)
    build_train_cache(snakemake.params.cfg, snakemake.wildcards.model, snakemake.input.pairs,  # noqa: F821
                      snakemake.output[0])  # noqa: F821
