# Stages 2-4: candidates per prompt (scattered over shards), AI-feedback scores per shard,
# then best-vs-worst preference pairs per model (gathered).

# The scorers' weights (config scores.<section>.<key>), for their downloads.
SCORER_KEYS = [("vqa", "model"), ("clip", "model"), ("aesthetic", "backbone"), ("aesthetic", "head")]


rule candidates_generate:
    input:
        qa=rules.qa_generate.output.qa,
        models=tiny_models_input(),
        downloads=model_needs("pretrained"),
    output:
        "results/{model}/candidates/shard-{shard}.tar",
    log:
        "logs/{model}/candidates_generate/shard-{shard}.log",
    benchmark:
        "benchmarks/{model}/candidates_generate/shard-{shard}.tsv"
    params:
        cfg=lambda w: stage_config("cpu_threads",
            *model_keys(w.model, "pretrained", "revision", "family", "resolution", "generation"), "candidates"
        ),
    threads: config["cpu_threads"]
    resources:
        gpu=model_gpus,
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/candidates_generate.py"


rule candidates_score:
    input:
        shard=rules.candidates_generate.output[0],
        qa=rules.qa_generate.output.qa,
        models=tiny_models_input(),
        downloads=needs(*(config["scores"][k][f] for k, f in SCORER_KEYS)),
    output:
        "results/{model}/scores/shard-{shard}.jsonl",
    log:
        "logs/{model}/candidates_score/shard-{shard}.log",
    benchmark:
        "benchmarks/{model}/candidates_score/shard-{shard}.tsv"
    params:
        cfg=stage_config("cpu_threads", "scores"),
    threads: config["cpu_threads"]
    resources:
        gpu=model_gpus,
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/candidates_score.py"


rule pairs_select:
    input:
        scores=expand("results/{{model}}/scores/shard-{shard}.jsonl", shard=SHARDS),
        shards=expand("results/{{model}}/candidates/shard-{shard}.tar", shard=SHARDS),
        qa=rules.qa_generate.output.qa,
    output:
        pairs="results/{model}/pairs.jsonl",
        summary="results/{model}/pairs_summary.json",
    log:
        "logs/{model}/pairs_select.log",
    benchmark:
        "benchmarks/{model}/pairs_select.tsv"
    params:
        cfg=stage_config("candidates.num_per_prompt", "pairs", "scores.weights"),
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/pairs_select.py"


MODEL_TARGETS.extend(["results/{model}/pairs.jsonl", "results/{model}/pairs_summary.json"])
