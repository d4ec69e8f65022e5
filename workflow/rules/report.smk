# The report: results/report.html, one self-contained page over all run models
# (agfsync.report.page), and results/metrics.tsv, every number of the result files in one
# long table (agfsync.report.table), and its figures as PDF and PNG in results/figures/
# (agfsync.report.plots). `snakemake --report report.html` adds Snakemake's own report, in
# which this page, the table, the figures and every metric file appear. The page also reads
# benchmarks/ (its Compute section) and the hub markers where they exist; they are no
# inputs, so a dry run's DAG does not change and a page built without them says so.

rule report:
    """The report page results/report.html, every number in results/metrics.tsv, the figures in results/figures/."""
    input:
        report_inputs,
    output:
        report=report(layout.REPORT, caption="../report/report.rst", category="Report"),
        tsv=report(layout.METRICS_TSV, caption="../report/metrics.rst", category="Report"),
        # the page's paper figures, PDF and PNG (agfsync.report.plots); Snakemake's report shows
        # the PNGs, one entry per model and figure (patterns: snakemake.io.glob_wildcards)
        figures=report(directory(layout.FIGURES), patterns=["{model}-{figure}.png"], caption="../report/figures.rst",
                       category="Figures", subcategory="{model}", labels={"model": "{model}", "figure": "{figure}"}),
    log:
        layout.LOGS["report"],
    params:
        cfg=stage_params("report"),
        config_hash=CONFIG_HASH,
        paths=dag.report_paths(config),  # what the page reads, per model (inputs above)
        hub=HUB_REPOS,  # hub id -> revision: the page reads their commits from the download markers
        gpus=dag.job_gpus(config),  # GPUs per job of each rule: GPU-hours of the benchmark files
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/report.py"
