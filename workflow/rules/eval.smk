# Stage 6: evaluation. Per benchmark, one prompt list; per model, variant (base |
# agfsync) and benchmark, image shards generated with the same seeds; per shard, the
# per-image scores or features (one rule over {bench}); per model and metric,
# results/{model}/{metric}.json. Each metric file is its own target:
# `snakemake results/sdxl/hpsv2.json` runs only the jobs behind it.

if EVAL_BENCHES:

    wildcard_constraints:
        bench="|".join(EVAL_BENCHES),
        variant="|".join(VARIANTS),

    rule eval_prompts:
        """The prompts of one benchmark (TIFA, HPS v2, MJHQ-30K) as records with ids and groups."""
        input:
            benchmark_files,
        output:
            layout.EVAL_PROMPTS,
        log:
            layout.LOGS["eval_prompts"],
        params:
            cfg=lambda w: stage_params("eval_prompts", w),
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_prompts.py"

    rule eval_generate:
        """One shard of benchmark images from the base or the fine-tuned model, same seeds for both."""
        input:
            prompts=rules.eval_prompts.output[0],
            unet=eval_unet,
            models=tiny_models_input(),
            downloads=model_needs("pretrained"),
        output:
            layout.EVAL_SHARD,
        log:
            layout.LOGS["eval_generate"],
        benchmark:
            layout.JOB_BENCHMARKS["eval_generate"]
        params:
            cfg=lambda w: stage_params("eval_generate", w),
        threads: config["cpu_threads"]
        resources:
            gpu=MODEL_GPUS,
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_generate.py"

    # Per-image scores (tifa, hpsv2: scores-{shard}.jsonl) or FID features (mjhq:
    # features-{shard}.npz) of one image shard: {kind} and {ext} follow {bench}
    # (layout.PER_IMAGE; eval_score_downloads refuses any other pairing).
    rule eval_score:
        """Scores of one shard of benchmark images (TIFA answers and gold, CLIP, aesthetic, HPS v2, FID features)."""
        input:
            shard=eval_shard,  # the base model's images may be another model's (agfsync.core.sharing)
            prompts=rules.eval_prompts.output[0],
            models=tiny_models_input(),
            downloads=eval_score_downloads,
        output:
            layout.EVAL_PER_IMAGE,
        wildcard_constraints:
            kind="|".join(sorted({layout.PER_IMAGE[b][0] for b in EVAL_BENCHES})),
            ext="|".join(sorted({layout.PER_IMAGE[b][1] for b in EVAL_BENCHES})),
        log:
            layout.LOGS["eval_score"],
        benchmark:
            layout.JOB_BENCHMARKS["eval_score"]
        params:
            cfg=eval_score_cfg,
        threads: config["cpu_threads"]
        resources:
            gpu=MODEL_GPUS,
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_score.py"


# Per-image rewards of one image shard, one file per reward model (agfsync.core.rewards):
# results/{model}/eval/{variant}/{bench}/{reward}-{shard}.jsonl, where {bench} is the
# benchmark eval.{reward}.benchmark names. Local models hold a GPU (eval_reward); VQAScore
# through a vision endpoint holds none (eval_reward_endpoint). Both run the same script.
if LOCAL_REWARDS:

    rule eval_reward:
        """Per-image scores of one reward model (PickScore, ImageReward, HPS v2.1, VQAScore) on one image shard."""
        input:
            shard=eval_shard,
            prompts=layout.EVAL_PROMPTS,
            models=tiny_models_input(),
            downloads=reward_downloads,
        output:
            layout.REWARD_PER_IMAGE,
        wildcard_constraints:
            reward="|".join(LOCAL_REWARDS),
        log:
            layout.LOGS["eval_reward"],
        benchmark:
            layout.JOB_BENCHMARKS["eval_reward"]
        params:
            cfg=lambda w: stage_params("eval_reward", w),
        threads: config["cpu_threads"]
        resources:
            gpu=MODEL_GPUS,
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_reward.py"


if ENDPOINT_REWARDS:

    rule eval_reward_endpoint:
        """VQAScore of one image shard from a vision endpoint's log-probabilities (no GPU held)."""
        input:
            shard=eval_shard,
            prompts=layout.EVAL_PROMPTS,
            responses=reward_responses,
        output:
            layout.REWARD_PER_IMAGE,
        wildcard_constraints:
            reward="|".join(ENDPOINT_REWARDS),
        log:
            layout.LOGS["eval_reward_endpoint"],
        benchmark:
            layout.JOB_BENCHMARKS["eval_reward_endpoint"]
        params:
            cfg=lambda w: stage_params("eval_reward_endpoint", w),
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_reward.py"


if "mjhq" in EVAL_BENCHES:

    rule eval_reference_mjhq:
        """Inception features of the MJHQ-30K reference images, FID's reference."""
        input:
            prompts=layout.EVAL_PROMPTS.format(bench="mjhq"),
            images=config["eval"]["mjhq"]["images"],
            models=tiny_models_input(),
            downloads=needs(*dag.mjhq_feature_values(config)),
        output:
            layout.MJHQ_REFERENCE,
        log:
            layout.LOGS["eval_reference_mjhq"],
        benchmark:
            layout.JOB_BENCHMARKS["eval_reference_mjhq"]
        params:
            cfg=stage_params("eval_reference_mjhq"),
        threads: config["cpu_threads"]
        resources:
            gpu=MODEL_GPUS,
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_reference_mjhq.py"


if [m for m in EVAL_METRICS if m != "judge"]:

    rule eval_metric:
        """One metric of one model: base vs AGFSync with paired bootstrap 95% CIs."""
        input:
            unpack(metric_inputs),
        output:
            report(layout.METRIC, category="Metrics", subcategory="{model}"),
        wildcard_constraints:
            metric="|".join(m for m in EVAL_METRICS if m != "judge"),
        log:
            layout.LOGS["eval_metric"],
        params:
            cfg=lambda w: stage_params("eval_metric", w),
            config_hash=lambda w: config_digest(config, w.model),
            hub=lambda w: hub_repos(config, [w.model]),  # their commits: provenance.hub of the file
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_metric.py"


if "judge" in EVAL_METRICS:
    JUDGE_BENCH = config["eval"]["judge"]["benchmark"]

    rule eval_judge:
        """The VLM judge: base vs AGFSync image pairs, win / tie / loss rates with Wilson intervals."""
        input:
            base=lambda w: eval_outputs(w.model, "base", JUDGE_BENCH, "shard"),
            agfsync=lambda w: eval_outputs(w.model, "agfsync", JUDGE_BENCH, "shard"),
            prompts=layout.EVAL_PROMPTS.format(bench=JUDGE_BENCH),
            responses=llm_inputs("eval.judge"),
        output:
            report(layout.fill(layout.METRIC, metric="judge"), category="Metrics", subcategory="{model}"),
        log:
            layout.LOGS["eval_judge"],
        params:
            cfg=lambda w: stage_params("eval_judge", w),
            config_hash=lambda w: config_digest(config, w.model),
            hub=lambda w: hub_repos(config, [w.model]),  # their commits: provenance.hub of the file
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_judge.py"
