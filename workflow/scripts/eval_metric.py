"""Rule eval_metric: results/{model}/{metric}.json from the per-image files (agfsync.results)."""

from agfsync.logs import job_logging
from agfsync.results import write_metric

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    write_metric(snakemake.params.cfg, snakemake.wildcards.model, snakemake.wildcards.metric,  # noqa: F821
                 dict(snakemake.input.items()), snakemake.output[0], snakemake.params.config_hash)  # noqa: F821
