"""Rule eval_generate: one shard of evaluation images for a variant (agfsync.evaluate)."""

from agfsync.evaluate import generate_eval_shard
from agfsync.ids import read_records
from agfsync.models import start_model_job
from agfsync.logs import job_logging
from agfsync.shards import shard_records

cfg = snakemake.params.cfg  # noqa: F821 (snakemake is injected)
w = snakemake.wildcards  # noqa: F821
with job_logging(snakemake.log[0]):  # noqa: F821
    start_model_job(snakemake.params.cfg, getattr(snakemake.resources, "gpu", 0))  # noqa: F821 (GPUs, cpu_threads)
    prompts = snakemake.input.prompts  # noqa: F821
    records = shard_records(read_records(prompts, required=("id", "prompt", "group")), int(w.shard),
                            cfg["eval"]["shard_size"], source=prompts)
    unet = f"{snakemake.input.unet[0]}/unet" if w.variant == "agfsync" else None  # noqa: F821
    generate_eval_shard(cfg, w.model, w.bench, w.variant, records, snakemake.output[0], unet=unet)  # noqa: F821
