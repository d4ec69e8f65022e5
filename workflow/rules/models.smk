# Tiny random-initialised models for offline runs (config tiny_models.enabled).

from agfsync.core.dag import TINY_FAMILIES


rule models_tiny:
    """Tiny random models in the real checkpoints' layouts (plumbing runs and tests; no download)."""
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


# The miniature world's trained models (agfsync world build; docs/world.md). They are shipped
# in the repository (world.models); this rule rebuilds them from world.seed into
# world.build_dir, ~25 minutes on 2 CPU cores. Only an explicit target runs it:
#   snakemake world_build --cores 2
rule world_build:
    """The miniature world's models (text-to-image, CLIP, BLIP-2, aesthetic head), trained from the seed."""
    output:
        models=directory(config["world"]["build_dir"]),
    log:
        layout.LOGS["world_build"],
    benchmark:
        layout.JOB_BENCHMARKS["world_build"]
    params:
        cfg=stage_params("world_build"),
    threads: 2
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/world_build.py"
