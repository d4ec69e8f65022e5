"""Rule candidates_generate: N candidates per prompt of one shard (agfsync.candidates.generate_shard)."""

import torch

from agfsync.candidates import generate_shard
from agfsync.io import read_jsonl
from agfsync.gpu_slots import bind_gpus
from agfsync.logs import job_logging
from agfsync.shards import shard_records

cfg = snakemake.params.cfg  # noqa: F821 (snakemake is injected)
with job_logging(snakemake.log[0]):  # noqa: F821
    bind_gpus(getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (one machine: devices no other job holds)
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    records = shard_records(read_jsonl(snakemake.input.qa), int(snakemake.wildcards.shard),  # noqa: F821
                            cfg["candidates"]["shard_size"])
    generate_shard(cfg, snakemake.wildcards.model, records, snakemake.output[0])  # noqa: F821
