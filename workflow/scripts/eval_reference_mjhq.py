"""Rule eval_reference_mjhq: FID features of the MJHQ-30K reference images (agfsync.evaluate)."""

from agfsync.evaluate import features_mjhq_reference
from agfsync.models import start_model_job
from agfsync.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    start_model_job(snakemake.params.cfg, getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (GPUs, cpu_threads)
    features_mjhq_reference(snakemake.params.cfg, snakemake.input.prompts, snakemake.output[0])  # noqa: F821
