"""Rule qa_generate: TIFA-style QA pairs per prompt (agfsync.stages.qa.run)."""

from agfsync.core.jobs import job
from agfsync.llm.providers import register_local_server
from agfsync.world.writer import WorldWriter
from agfsync.stages import qa

register_local_server("world", WorldWriter)  # LLM provider `world` (agfsync.llm may not import world)
with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    qa.run(j.settings, j.inputs, j.outputs, **j.wildcards)
