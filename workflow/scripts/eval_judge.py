"""Rule eval_judge: VLM judge of base vs AGFSync images (agfsync.judge) -> results/{model}/judge.json."""

from agfsync.config import with_operational
from agfsync.logs import job_logging, secret_env_names
from agfsync.results import write_judge

cfg = with_operational(snakemake.params.cfg, snakemake.config)  # noqa: F821 (snakemake is injected)
with job_logging(snakemake.log[0], secret_env_names(snakemake.config)):  # noqa: F821 (every key the config names)
    write_judge(cfg, snakemake.wildcards.model, list(snakemake.input.base), list(snakemake.input.agfsync),  # noqa: F821
                snakemake.input.prompts, snakemake.output[0], snakemake.params.config_hash)  # noqa: F821
