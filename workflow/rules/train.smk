# Stage 5: Diffusion-DPO. Latents and text embeddings are cached once (train_cache), then
# torchrun trains the UNet (train_dpo). Checkpoints live outside the rule's outputs, so a
# failed or preempted job keeps them and the rerun resumes from the latest.


rule train_cache:
    input:
        pairs=rules.pairs_select.output.pairs,
        shards=expand("results/{{model}}/candidates/shard-{shard}.tar", shard=SHARDS),
        models=tiny_models_input(),
        downloads=model_needs("pretrained"),
    output:
        directory("results/{model}/train_cache"),
    log:
        "logs/{model}/train_cache.log",
    benchmark:
        "benchmarks/{model}/train_cache.tsv"
    params:
        cfg=lambda w: stage_config("cpu_threads",
            *model_keys(w.model, "pretrained", "revision", "family", "resolution"), "train.latents", "train.cache_chunk"
        ),
    threads: config["cpu_threads"]
    resources:
        gpu=model_gpus,
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/train_cache.py"


rule train_dpo:
    input:
        cache=rules.train_cache.output[0],
        models=tiny_models_input(),
        downloads=model_needs("pretrained"),
    output:
        directory("results/{model}/agfsync"),
    log:
        "logs/{model}/train_dpo.log",
    benchmark:
        "benchmarks/{model}/train_dpo.tsv"
    params:
        cfg=lambda w: stage_config("cpu_threads", f"models.{w.model}", "train"),
        checkpoints="results/{model}/train_checkpoints",
    threads: config["cpu_threads"]
    resources:
        **train_resources(),
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/train_dpo.py"


MODEL_TARGETS.append("results/{model}/agfsync")
