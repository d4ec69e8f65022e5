"""Rule pairs_select: best vs worst candidate per prompt (agfsync.stages.pairs.run)."""

from agfsync.core.jobs import job
from agfsync.stages import pairs

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    pairs.run(j.settings, j.inputs, j.outputs, **j.wildcards)
