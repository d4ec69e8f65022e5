"""Rule train_dpo: Diffusion-DPO training (agfsync.launch.run_training).

train.gpus processes per node (gloo processes on a CPU run): `torchrun --standalone` on one
node, `srun torchrun` with a c10d rendezvous on several (train.nodes, train.launch)."""

from agfsync.config import with_operational
from agfsync.launch import run_training
from agfsync.gpu_slots import bind_gpus
from agfsync.logs import job_logging

cfg = with_operational(snakemake.params.cfg, snakemake.config)  # noqa: F821 (snakemake is injected)
with job_logging(snakemake.log[0]):  # noqa: F821
    bind_gpus(getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (one machine: devices no other job holds)
    run_training(cfg, snakemake.wildcards.model, snakemake.input.cache,  # noqa: F821
                 snakemake.output[0], snakemake.params.checkpoints, log_path=snakemake.log[0])  # noqa: F821
