"""Rule candidates_score: VQA, CLIP and aesthetic scores of one shard (agfsync.stages.scoring)."""

from agfsync.core.jobs import job
from agfsync.stages import scoring

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    scoring.run(j.settings, j.inputs, j.outputs, **j.wildcards)
