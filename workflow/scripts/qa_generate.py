"""Rule qa_generate: TIFA-style QA pairs per prompt (agfsync.stages.qa.run)."""

from agfsync.core.jobs import job
from agfsync.stages import qa

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    qa.run(j.settings, j.inputs, j.outputs, **j.wildcards)
