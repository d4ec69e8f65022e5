# Stage 6: evaluation. Per benchmark, one prompt list; per model, variant (base |
# agfsync) and benchmark, image shards generated with the same seeds; per shard, the
# per-image scores; per model and metric, results/{model}/{metric}.json. Each metric file
# is its own target: `snakemake results/sdxl/hpsv2.json` runs only the jobs behind it.

if EVAL_BENCHES:

    wildcard_constraints:
        bench="|".join(EVAL_BENCHES),
        variant="base|agfsync",

    rule eval_prompts:
        input:
            benchmark_files,
        output:
            "results/eval/{bench}/prompts.jsonl",
        log:
            "logs/eval/eval_prompts/{bench}.log",
        params:
            cfg=lambda w: stage_config(f"eval.{w.bench}"),
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_prompts.py"

    rule eval_generate:
        input:
            prompts=rules.eval_prompts.output[0],
            unet=eval_unet,
            models=tiny_models_input(),
            downloads=model_needs("pretrained"),
        output:
            "results/{model}/eval/{variant}/{bench}/shard-{shard}.tar",
        log:
            "logs/{model}/eval_generate/{variant}/{bench}/shard-{shard}.log",
        benchmark:
            "benchmarks/{model}/eval_generate/{variant}/{bench}/shard-{shard}.tsv"
        params:
            cfg=lambda w: stage_config("cpu_threads",
                *model_keys(w.model, "pretrained", "revision", "family", "resolution", "generation"),
                "candidates.attention", "eval.shard_size", "eval.prompts_per_batch",
            ),
        threads: config["cpu_threads"]
        resources:
            gpu=model_gpus,
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_generate.py"


if "tifa" in EVAL_BENCHES:

    rule eval_score_tifa:
        input:
            shard="results/{model}/eval/{variant}/tifa/shard-{shard}.tar",
            prompts="results/eval/tifa/prompts.jsonl",
            models=tiny_models_input(),
            downloads=needs(*(config["scores"][k][f] for k, f in SCORER_KEYS)),
        output:
            "results/{model}/eval/{variant}/tifa/scores-{shard}.jsonl",
        log:
            "logs/{model}/eval_score_tifa/{variant}/shard-{shard}.log",
        benchmark:
            "benchmarks/{model}/eval_score_tifa/{variant}/shard-{shard}.tsv"
        params:
            cfg=stage_config("cpu_threads", "scores.vqa", "scores.clip", "scores.aesthetic"),
        threads: config["cpu_threads"]
        resources:
            gpu=model_gpus,
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_score.py"


if "hpsv2" in EVAL_BENCHES:

    rule eval_score_hpsv2:
        input:
            shard="results/{model}/eval/{variant}/hpsv2/shard-{shard}.tar",
            prompts="results/eval/hpsv2/prompts.jsonl",
            models=tiny_models_input(),
            downloads=needs(config["eval"]["hpsv2"]["checkpoint"]),
        output:
            "results/{model}/eval/{variant}/hpsv2/scores-{shard}.jsonl",
        log:
            "logs/{model}/eval_score_hpsv2/{variant}/shard-{shard}.log",
        benchmark:
            "benchmarks/{model}/eval_score_hpsv2/{variant}/shard-{shard}.tsv"
        params:
            cfg=stage_config("cpu_threads", "eval.hpsv2"),
        threads: config["cpu_threads"]
        resources:
            gpu=model_gpus,
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_score.py"


if "mjhq" in EVAL_BENCHES:
    MJHQ_FEATURE_WEIGHTS = [config["eval"]["mjhq"][k] for k in ("features", "inception_weights")]

    rule eval_features_mjhq:
        input:
            shard="results/{model}/eval/{variant}/mjhq/shard-{shard}.tar",
            prompts="results/eval/mjhq/prompts.jsonl",
            models=tiny_models_input(),
            downloads=needs(*MJHQ_FEATURE_WEIGHTS),
        output:
            "results/{model}/eval/{variant}/mjhq/features-{shard}.npz",
        log:
            "logs/{model}/eval_features_mjhq/{variant}/shard-{shard}.log",
        params:
            cfg=stage_config("cpu_threads", "eval.mjhq"),
        threads: config["cpu_threads"]
        resources:
            gpu=model_gpus,
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_score.py"

    rule eval_reference_mjhq:
        input:
            prompts="results/eval/mjhq/prompts.jsonl",
            images=config["eval"]["mjhq"]["images"],
            models=tiny_models_input(),
            downloads=needs(*MJHQ_FEATURE_WEIGHTS),
        output:
            "results/eval/mjhq/reference_features.npz",
        log:
            "logs/eval/eval_reference_mjhq.log",
        benchmark:
            "benchmarks/eval/eval_reference_mjhq.tsv"
        params:
            cfg=stage_config("cpu_threads", "eval.mjhq"),
        threads: config["cpu_threads"]
        resources:
            gpu=model_gpus,
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_reference_mjhq.py"


if [m for m in EVAL_METRICS if m != "judge"]:

    rule eval_metric:
        input:
            unpack(metric_inputs),
        output:
            report("results/{model}/{metric}.json", category="Metrics", subcategory="{model}"),
        wildcard_constraints:
            metric="|".join(m for m in EVAL_METRICS if m != "judge"),
        log:
            "logs/{model}/eval_metric/{metric}.log",
        params:
            cfg=lambda w: stage_config(f"models.{w.model}.pretrained", f"models.{w.model}.resolution", "eval",
                                       "scores.vqa.model", "scores.clip.model", "scores.aesthetic"),
            config_hash=lambda w: config_digest(config, w.model),
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_metric.py"


if "judge" in EVAL_METRICS:
    JUDGE_BENCH = config["eval"]["judge"]["benchmark"]

    rule eval_judge:
        input:
            base=lambda w: eval_outputs(w.model, "base", JUDGE_BENCH, "shard"),
            agfsync=lambda w: eval_outputs(w.model, "agfsync", JUDGE_BENCH, "shard"),
            prompts=f"results/eval/{JUDGE_BENCH}/prompts.jsonl",
            responses=[config["eval"]["judge"]["llm"]["responses"]] if config["eval"]["judge"]["llm"]["provider"] == "file" else [],
        output:
            report("results/{model}/judge.json", category="Metrics", subcategory="{model}"),
        log:
            "logs/{model}/eval_judge.log",
        params:
            cfg=lambda w: stage_config(f"models.{w.model}.pretrained", "eval.judge", f"eval.{JUDGE_BENCH}.version"),
            config_hash=lambda w: config_digest(config, w.model),
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_judge.py"


MODEL_TARGETS.extend(f"results/{{model}}/{metric}.json" for metric in EVAL_METRICS)
