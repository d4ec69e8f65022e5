"""Rule download_file: one benchmark or weight file, resumable and verified (agfsync.downloads)."""

from agfsync.downloads import download_file
from agfsync.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    download_file(snakemake.params.url, snakemake.output[0], sha256=snakemake.params.sha256)  # noqa: F821
