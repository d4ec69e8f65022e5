"""Rule train_cache: latents and text embeddings of every pair, once (agfsync.stages.train.run_cache)."""

from agfsync.core.jobs import job
from agfsync.stages import train

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    train.run_cache(j.settings, j.inputs, j.outputs, **j.wildcards)
