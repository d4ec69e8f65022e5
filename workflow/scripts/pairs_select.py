"""Rule pairs_select: best vs worst candidate per prompt (agfsync.core.pairs.select_pairs)."""

from agfsync.core.logs import job_logging
from agfsync.core.pairs import select_pairs

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    select_pairs(
        snakemake.params.cfg, list(snakemake.input.scores), snakemake.input.qa,  # noqa: F821
        list(snakemake.input.shards), snakemake.output.pairs, snakemake.output.summary,  # noqa: F821
    )
