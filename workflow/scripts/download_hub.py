"""Rule download_hub: one Hugging Face repository into the HF cache (agfsync.core.downloads)."""

from agfsync.core.downloads import download_hub
from agfsync.core.jobs import job

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    download_hub(j.params["repo_id"], j.params["revision"], j.outputs["marker"], ignore_patterns=j.params["ignore"])
