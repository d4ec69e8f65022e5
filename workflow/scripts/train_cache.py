"""Rule train_cache: latents and text embeddings of every pair, once (agfsync.train_data.build_train_cache)."""

import torch

from agfsync.gpu_slots import bind_gpus
from agfsync.logs import job_logging
from agfsync.train_data import build_train_cache

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    bind_gpus(getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (one machine: devices no other job holds)
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    build_train_cache(snakemake.params.cfg, snakemake.wildcards.model, snakemake.input.pairs,  # noqa: F821
                      snakemake.output[0])  # noqa: F821
