"""Rule candidates_score: VQA, CLIP and aesthetic scores of one shard (agfsync.scoring.score_shard)."""

import torch

from agfsync.gpu_slots import bind_gpus
from agfsync.logs import job_logging
from agfsync.scoring import score_shard

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    bind_gpus(getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (one machine: devices no other job holds)
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    score_shard(snakemake.params.cfg, snakemake.input.shard, snakemake.input.qa, snakemake.output[0])  # noqa: F821
