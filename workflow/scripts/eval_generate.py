"""Rule eval_generate: one shard of evaluation images for a variant (agfsync.stages.evaluate.run_generate)."""

from agfsync.core.jobs import job
from agfsync.stages import evaluate

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    evaluate.run_generate(j.settings, j.inputs, j.outputs, **j.wildcards)
