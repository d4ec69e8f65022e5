# Stages 2-4: candidates per prompt (scattered over shards), AI-feedback scores per shard,
# then best-vs-worst preference pairs per model (gathered).


rule candidates_generate:
    """Stage 2: N candidate images per prompt of one shard, Gaussian noise on the text embedding."""
    input:
        qa=rules.qa_generate.output.qa,
        models=tiny_models_input(),
        downloads=model_needs("pretrained"),
    output:
        layout.CANDIDATE_SHARD,
    log:
        layout.LOGS["candidates_generate"],
    benchmark:
        layout.JOB_BENCHMARKS["candidates_generate"]
    params:
        cfg=lambda w: stage_params("candidates_generate", w),
    threads: config["cpu_threads"]
    resources:
        gpu=MODEL_GPUS,
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/candidates_generate.py"


# The sub-scores only: their weighted total is pairs_select's (new weights rerun no scoring).
rule candidates_score:
    """Stage 3: VQA, CLIP and aesthetic sub-scores of one shard's candidates."""
    input:
        shard=lambda w: shared_file("candidates", w.model, layout.CANDIDATE_SHARD, shard=w.shard),
        qa=rules.qa_generate.output.qa,
        models=tiny_models_input(),
        downloads=needs(*dag.scorer_values(config)),
    output:
        layout.SCORES_SHARD,
    log:
        layout.LOGS["candidates_score"],
    benchmark:
        layout.JOB_BENCHMARKS["candidates_score"]
    params:
        cfg=lambda w: stage_params("candidates_score", w),  # the model's scores.* (overrides)
    threads: config["cpu_threads"]
    resources:
        gpu=MODEL_GPUS,
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/candidates_score.py"


rule pairs_select:
    """Stage 4: best vs worst candidate of each prompt by the weighted total: the preference pairs."""
    input:
        scores=lambda w: candidate_files(w.model, "scores"),  # another model's, where they agree (agfsync.core.sharing)
        shards=lambda w: candidate_files(w.model, "candidates"),
        qa=rules.qa_generate.output.qa,
    output:
        pairs=layout.PAIRS,
        summary=layout.PAIRS_SUMMARY,
    log:
        layout.LOGS["pairs_select"],
    benchmark:
        layout.JOB_BENCHMARKS["pairs_select"]
    params:
        cfg=lambda w: stage_params("pairs_select", w),
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/pairs_select.py"
