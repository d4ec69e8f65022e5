# Tiny random-initialised models for offline runs (config tiny_models.enabled).


rule models_tiny:
    output:
        directory(TINY_MODELS),
    log:
        "logs/models/models_tiny.log",
    benchmark:
        "benchmarks/models/models_tiny.tsv"
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/models_tiny.py"
