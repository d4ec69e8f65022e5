# Tiny random-initialised models for offline runs (config tiny_models.enabled).

from agfsync.core.dag import TINY_FAMILIES


rule models_tiny:
    output:
        directory(TINY_MODELS),
    log:
        layout.LOGS["models_tiny"],
    benchmark:
        layout.JOB_BENCHMARKS["models_tiny"]
    params:
        families=list(TINY_FAMILIES),  # a new family rebuilds the directory
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/models_tiny.py"
