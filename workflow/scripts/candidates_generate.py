"""Rule candidates_generate: N candidates per prompt of one shard (agfsync.stages.candidates.run)."""

from agfsync.core.jobs import job
from agfsync.stages import candidates

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    candidates.run(j.settings, j.inputs, j.outputs, **j.wildcards)
