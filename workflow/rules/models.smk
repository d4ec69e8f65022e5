# Tiny random-initialised models for offline runs (config tiny_models.enabled).

from agfsync.tiny_models import FAMILIES as TINY_FAMILIES


rule models_tiny:
    output:
        directory(TINY_MODELS),
    log:
        "logs/models/models_tiny.log",
    benchmark:
        "benchmarks/models/models_tiny.tsv"
    params:
        families=list(TINY_FAMILIES),  # a new family rebuilds the directory
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/models_tiny.py"
