# Proxy vs gold along training (eval.trajectory): per run model, the base model, every
# snapshot of train.snapshots and the final UNet draw one image for each of the first
# eval.trajectory.prompts TIFA prompts (the main evaluation's seeds); the stage-3 judges and
# the gold answerer (eval.tifa.gold) score them: results/{model}/trajectory.json
# (agfsync.stages.trajectory). The report plots it and warns of reward hacking.

if dag.trajectory_enabled(config):

    rule eval_trajectory:
        """Proxy vs gold at the training snapshots: the reward-hacking watch."""
        input:
            prompts=layout.EVAL_PROMPTS.format(bench="tifa"),
            trained=rules.train_dpo.output[0],
            models=tiny_models_input(),
            downloads=needs(*dag.scorer_values(config)),
        output:
            trajectory=layout.TRAJECTORY,
        log:
            layout.LOGS["eval_trajectory"],
        benchmark:
            layout.JOB_BENCHMARKS["eval_trajectory"]
        params:
            cfg=lambda w: stage_params("eval_trajectory", w),
        threads: config["cpu_threads"]
        resources:
            gpu=MODEL_GPUS,
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/eval_trajectory.py"
