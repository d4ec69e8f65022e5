"""Rule report: results/report.html (agfsync.report)."""

from pathlib import Path

from agfsync.logs import job_logging
from agfsync.report import build_report

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    out = Path(snakemake.output[0])  # noqa: F821
    build_report(snakemake.params.cfg, out, root=out.parent, config_hash=snakemake.params.config_hash)  # noqa: F821
