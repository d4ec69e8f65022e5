"""Rule models_tiny: build the tiny offline models (agfsync.tiny_models.build_all)."""

from agfsync.logs import job_logging
from agfsync.tiny_models import build_all

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    build_all(snakemake.output[0])  # noqa: F821
