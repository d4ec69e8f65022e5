"""Rule download_file: one benchmark or weight file, resumable and verified (agfsync.core.downloads)."""

from agfsync.core.downloads import download_file
from agfsync.core.jobs import job

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    download_file(j.params["url"], j.outputs["file"], sha256=j.params["sha256"])
