"""Rule prompts_generate: LLM-written prompts (agfsync.stages.prompts.run)."""

from agfsync.core.jobs import job
from agfsync.llm.providers import register_local_server
from agfsync.world.writer import WorldWriter
from agfsync.stages import prompts

register_local_server("world", WorldWriter)  # LLM provider `world` (agfsync.llm may not import world)
with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    prompts.run(j.settings, j.inputs, j.outputs, **j.wildcards)
