"""Rule eval_prompts: a benchmark's prompt list in its fixed order (agfsync.stages.evaluate.run_prompts)."""

from agfsync.core.jobs import job
from agfsync.stages import evaluate

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    evaluate.run_prompts(j.settings, j.inputs, j.outputs, **j.wildcards)
