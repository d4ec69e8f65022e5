"""Rule prompts_generate: LLM-written prompts (agfsync.prompts.write_prompts)."""

from agfsync.logs import job_logging, secret_env_names
from agfsync.prompts import write_prompts

cfg = snakemake.params.cfg  # noqa: F821 (snakemake is injected)
with job_logging(snakemake.log[0], secret_env_names(cfg)):  # noqa: F821
    write_prompts(cfg, snakemake.output.prompts, snakemake.output.summary)  # noqa: F821
