"""Rule report: results/report.html, results/metrics.tsv and the figures in results/figures/
(agfsync.report.page.run) from the files the rule names (params.paths: agfsync.core.dag.report_paths)."""

from agfsync.core.jobs import job
from agfsync.report import page

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    page.run(j.settings, j.inputs, j.outputs, paths=j.params["paths"], config_hash=j.params["config_hash"],
             hub=j.params["hub"], gpus=j.params["gpus"])
