"""Rule download_hub: one Hugging Face repository into the HF cache (agfsync.downloads)."""

from agfsync.downloads import download_hub
from agfsync.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    download_hub(snakemake.params.repo_id, snakemake.params.revision, snakemake.output[0],  # noqa: F821
                 ignore_patterns=snakemake.params.ignore)  # noqa: F821
