# Stage 5: Diffusion-DPO. Latents and text embeddings are cached once (train_cache), then
# torchrun trains the UNet (train_dpo). Checkpoints live outside the rule's outputs, so a
# failed or preempted job keeps them and the rerun resumes from the latest.


rule train_cache:
    """The preference pairs encoded once for training (latents and text embeddings)."""
    input:
        pairs=lambda w: shared_file("pairs", w.model, layout.PAIRS),  # another model's, where they agree
        shards=rules.pairs_select.input.shards,
        models=tiny_models_input(),
        downloads=model_needs("pretrained"),
    output:
        directory(layout.TRAIN_CACHE),
    log:
        layout.LOGS["train_cache"],
    benchmark:
        layout.JOB_BENCHMARKS["train_cache"]
    params:
        cfg=lambda w: stage_params("train_cache", w),
    threads: config["cpu_threads"]
    resources:
        gpu=MODEL_GPUS,
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/train_cache.py"


rule train_dpo:
    """Stage 5: Diffusion-DPO fine-tuning of the UNet on the pairs, resumable from its checkpoints."""
    input:
        cache=lambda w: shared_file("train_cache", w.model, layout.TRAIN_CACHE),  # another model's, where it agrees
        models=tiny_models_input(),
        downloads=model_needs("pretrained"),
    output:
        directory(layout.TRAINED),
    log:
        layout.LOGS["train_dpo"],
    benchmark:
        layout.JOB_BENCHMARKS["train_dpo"]
    params:
        cfg=lambda w: stage_params("train_dpo", w),
        checkpoints=layout.TRAIN_CHECKPOINTS,
    threads: config["cpu_threads"]
    resources:
        **train_resources(),
    conda:
        "../../envs/agfsync.yaml"
    script:
        "../scripts/train_dpo.py"
