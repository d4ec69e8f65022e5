"""The pipeline's stages, one module each (prompts, qa, candidates, scoring, pairs, train,
evaluate, metrics, judge). A stage is what a workflow rule runs: each exposes
`run(settings, inputs, outputs, **wildcards)` (evaluate and train one per rule: run_prompts,
run_generate, run_score, run_reference; run_cache, run), which the rule's script calls
through agfsync.core.jobs.job and the `agfsync` command calls with the settings of a config
file. Imports core, llm, models and train.
"""
