"""Rule eval_reference_mjhq: FID features of the MJHQ-30K reference images (agfsync.evaluate)."""

import torch

from agfsync.evaluate import features_mjhq_reference
from agfsync.gpu_slots import bind_gpus
from agfsync.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    bind_gpus(getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (one machine: devices no other job holds)
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    features_mjhq_reference(snakemake.params.cfg, snakemake.input.prompts, snakemake.output[0])  # noqa: F821
