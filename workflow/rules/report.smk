# The report: results/report.html, one self-contained page over all run models
# (agfsync.report). `snakemake --report report.html` adds Snakemake's own report, in
# which this page and every metric file appear.

rule report:
    input:
        report_inputs,
    output:
        report("results/report.html", caption="../report/report.rst", category="Report"),
    log:
        "logs/report.log",
    params:
        cfg=stage_config("run_models", "models", "tiny_models", "eval"),
        config_hash=CONFIG_HASH,
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/report.py"


RUN_TARGETS.append("results/report.html")
