"""Rule prompts_generate: LLM-written prompts (agfsync.prompts.write_prompts)."""

from agfsync.config import with_operational
from agfsync.logs import job_logging, secret_env_names
from agfsync.prompts import write_prompts

# params hold what determines the output; fetch settings (concurrency, retries, budget) come
# from the full config, so tuning them reruns nothing.
cfg = with_operational(snakemake.params.cfg, snakemake.config)  # noqa: F821 (snakemake is injected)
with job_logging(snakemake.log[0], secret_env_names(snakemake.config)):  # noqa: F821 (every key the config names)
    write_prompts(cfg, snakemake.output.prompts, snakemake.output.summary)  # noqa: F821
