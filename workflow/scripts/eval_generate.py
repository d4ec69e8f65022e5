"""Rule eval_generate: one shard of evaluation images for a variant (agfsync.evaluate)."""

import torch

from agfsync.evaluate import generate_eval_shard
from agfsync.io import read_jsonl
from agfsync.gpu_slots import bind_gpus
from agfsync.logs import job_logging
from agfsync.shards import shard_records

cfg = snakemake.params.cfg  # noqa: F821 (snakemake is injected)
w = snakemake.wildcards  # noqa: F821
with job_logging(snakemake.log[0]):  # noqa: F821
    bind_gpus(getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (one machine: devices no other job holds)
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    records = shard_records(read_jsonl(snakemake.input.prompts), int(w.shard), cfg["eval"]["shard_size"])  # noqa: F821
    unet = f"{snakemake.input.unet[0]}/unet" if w.variant == "agfsync" else None  # noqa: F821
    generate_eval_shard(cfg, w.model, w.bench, w.variant, records, snakemake.output[0], unet=unet)  # noqa: F821
