# Stage 1: an LLM writes the prompts, then TIFA-style question/answer pairs for each.


rule prompts_generate:
    input:
        responses=llm_inputs("prompts"),
        models=tiny_models_input() if config["prompts"]["dedup"]["embedder"] == "clip" else [],
        downloads=needs(config["scores"]["clip"]["model"]) if config["prompts"]["dedup"]["embedder"] == "clip" else [],
    output:
        prompts="results/prompts/prompts.jsonl",
        summary="results/prompts/prompts_summary.json",
    log:
        "logs/prompts/prompts_generate.log",
    benchmark:
        "benchmarks/prompts/prompts_generate.tsv"
    params:
        cfg=stage_config("prompts", "scores.clip"),
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/prompts_generate.py"


rule qa_generate:
    input:
        prompts=rules.prompts_generate.output.prompts,
        responses=llm_inputs("qa"),
    output:
        qa="results/prompts/qa.jsonl",
        summary="results/prompts/qa_summary.json",
    log:
        "logs/prompts/qa_generate.log",
    benchmark:
        "benchmarks/prompts/qa_generate.tsv"
    params:
        cfg=stage_config("qa"),
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/qa_generate.py"
