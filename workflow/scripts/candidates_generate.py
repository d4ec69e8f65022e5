"""Rule candidates_generate: N candidates per prompt of one shard (agfsync.candidates.generate_shard)."""

from agfsync.candidates import generate_shard
from agfsync.ids import read_records
from agfsync.models import start_model_job
from agfsync.logs import job_logging
from agfsync.shards import shard_records

cfg = snakemake.params.cfg  # noqa: F821 (snakemake is injected)
with job_logging(snakemake.log[0]):  # noqa: F821
    start_model_job(snakemake.params.cfg, getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (GPUs, cpu_threads)
    qa = snakemake.input.qa  # noqa: F821
    records = shard_records(read_records(qa, required=("id", "prompt")), int(snakemake.wildcards.shard),  # noqa: F821
                            cfg["candidates"]["shard_size"], source=qa)
    generate_shard(cfg, snakemake.wildcards.model, records, snakemake.output[0])  # noqa: F821
