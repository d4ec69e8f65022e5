"""Rule prompts_generate: LLM-written prompts (agfsync.stages.prompts.run)."""

from agfsync.core.jobs import job
from agfsync.stages import prompts

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    prompts.run(j.settings, j.inputs, j.outputs, **j.wildcards)
