"""Rule eval_metric: results/{model}/{metric}.json from the per-image files (agfsync.stages.metrics.run)."""

from agfsync.core.jobs import job
from agfsync.stages import metrics

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    metrics.run(j.settings, j.inputs, j.outputs, config_hash=j.params["config_hash"],
                hub=j.params.get("hub"), **j.wildcards)
