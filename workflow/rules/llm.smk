# Stage 1: an LLM writes the prompts, then TIFA-style question/answer pairs for each.

DEDUP_MODEL = dag.dedup_values(config)  # the weights of the near-duplicate embedder (bge, clip; ngram: none)


rule prompts_generate:
    """Stage 1a: diverse prompts over the configured categories from the LLM, de-duplicated."""
    input:
        responses=llm_inputs("prompts"),
        models=tiny_models_input() if DEDUP_MODEL else [],
        downloads=needs(*DEDUP_MODEL),
        # prompts.exclude_eval_prompts: no training prompt equals an evaluation prompt
        eval_prompts=expand(layout.EVAL_PROMPTS, bench=EVAL_BENCHES) if config["prompts"]["exclude_eval_prompts"] else [],
    output:
        prompts=layout.PROMPTS,
        summary=layout.PROMPTS_SUMMARY,
    log:
        layout.LOGS["prompts_generate"],
    benchmark:
        layout.JOB_BENCHMARKS["prompts_generate"]
    params:
        cfg=stage_params("prompts_generate"),
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/prompts_generate.py"


rule qa_generate:
    """Stage 1b: TIFA-style question / answer pairs for each prompt from the LLM."""
    input:
        prompts=rules.prompts_generate.output.prompts,
        responses=llm_inputs("qa"),
    output:
        qa=layout.QA,
        summary=layout.QA_SUMMARY,
    log:
        layout.LOGS["qa_generate"],
    benchmark:
        layout.JOB_BENCHMARKS["qa_generate"]
    params:
        cfg=stage_params("qa_generate"),
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/qa_generate.py"
