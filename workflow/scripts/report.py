"""Rule report: results/report.html (agfsync.report.page) from the files the rule names
(params.paths: agfsync.core.dag.report_paths)."""

from agfsync.core.logs import job_logging
from agfsync.report.page import build_report

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    build_report(snakemake.params.cfg, snakemake.output[0], snakemake.params.paths,  # noqa: F821
                 config_hash=snakemake.params.config_hash)  # noqa: F821
