"""Rule models_tiny: build the tiny offline models (agfsync.demo.tiny_models.build_all)."""

from agfsync.core.jobs import job
from agfsync.demo.tiny_models import build_all

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    build_all(j.outputs["models"])
