"""Rule train_dpo: torchrun Diffusion-DPO training (agfsync.launch.run_training).

One process per GPU the rule was given (resources.gpu); on a CPU run (device: cpu, no GPU
resource) train.gpus gloo processes."""

from agfsync.launch import run_training
from agfsync.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    run_training(snakemake.params.cfg, snakemake.wildcards.model, snakemake.input.cache,  # noqa: F821
                 snakemake.output[0], snakemake.params.checkpoints, log_path=snakemake.log[0],  # noqa: F821
                 processes=int(snakemake.resources.gpu) or None)  # noqa: F821
