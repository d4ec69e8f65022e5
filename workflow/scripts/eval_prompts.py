"""Rule eval_prompts: a benchmark's prompt list in its fixed order (agfsync.benchmarks)."""

from agfsync.benchmarks import load_benchmark
from agfsync.io import write_jsonl
from agfsync.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    records = load_benchmark(snakemake.params.cfg, snakemake.wildcards.bench)  # noqa: F821
    write_jsonl(snakemake.output[0], records)  # noqa: F821
