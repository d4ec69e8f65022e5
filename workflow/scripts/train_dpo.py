"""Rule train_dpo: Diffusion-DPO training (agfsync.stages.train.run, through agfsync.train.launch).

train.gpus processes per node (gloo processes on a CPU run): `torchrun --standalone` on one
node, `srun torchrun` with a c10d rendezvous on several (train.nodes, train.launch)."""

from agfsync.core.jobs import job
from agfsync.stages import train

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    train.run(j.settings, j.inputs, j.outputs, checkpoints=j.params["checkpoints"], log=j.log,
              config_digest=j.config_digest, **j.wildcards)
