"""Rule eval_reference_mjhq: FID features of the MJHQ-30K reference images (agfsync.stages.evaluate.run_reference)."""

from agfsync.core.jobs import job
from agfsync.stages import evaluate

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    evaluate.run_reference(j.settings, j.inputs, j.outputs, **j.wildcards)
