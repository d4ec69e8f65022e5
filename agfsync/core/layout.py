"""Where the workflow writes: every results/, logs/ and benchmarks/ path pattern, in one place.

The rules (workflow/rules/*.smk), the DAG helpers (agfsync.core.dag) and the report read
their paths from here; a .smk file names no results path of its own. Patterns use
Snakemake's wildcards ({model}, {shard}, ...): fill them with str.format, or let a rule's
output apply them. Pure: no imports beyond the standard library.

The results tree (run from the repository root; {model} is a key of `models:`, {shard}
five digits, {variant} base | agfsync, {bench} tifa | hpsv2 | mjhq):

  results/
    prompts/prompts.jsonl             stage 1: the LLM's prompts           (prompts_generate)
    prompts/prompts_summary.json
    prompts/qa.jsonl                  stage 1: their question/answer pairs  (qa_generate)
    prompts/qa_summary.json
    eval/{bench}/prompts.jsonl        stage 6: one benchmark's prompt list  (eval_prompts)
    eval/mjhq/reference_features.npz  stage 6: FID features of the MJHQ reference images (eval_reference_mjhq)
    {model}/
      candidates/shard-{shard}.tar    stage 2: candidate images of a shard of prompts (candidates_generate)
      scores/shard-{shard}.jsonl      stage 3: their sub-scores, vqa / clip / aesthetic (candidates_score)
      pairs.jsonl                     stage 4: best vs worst candidate per prompt, the weighted
      pairs_summary.json                       total computed here (pairs_select)
      train_cache/                    stage 5: latents and text embeddings (train_cache)
      train_checkpoints/              stage 5: checkpoints, outside the rule's outputs (train_dpo)
      agfsync/                        stage 5: the fine-tuned UNet (unet/), metrics.jsonl, summary.json (train_dpo)
      eval/{variant}/{bench}/
        shard-{shard}.tar             stage 6: evaluation images (eval_generate)
        scores-{shard}.jsonl          stage 6: per-image scores, tifa and hpsv2 (eval_score)
        features-{shard}.npz          stage 6: per-image FID features, mjhq (eval_score)
        {reward}-{shard}.jsonl        stage 6: per-image reward (pickscore, imagereward, hpsv21,
                                      vqascore) of the benchmark the reward names (eval_reward)
      {metric}.json                   stage 6: one metric, base vs AGFSync (eval_metric, eval_judge)
      trajectory.json                 proxy reward and gold along training (eval_trajectory;
                                      images and scores per point in trajectory.json.work/)
    report.html                       the report over all run models (report)
    metrics.tsv                       every number of the metric files, one long table (report)
    figures/{model}-{kind}.{pdf,png}  the report's paper figures, the PNGs inline on the page (report)

  logs/<...>.log and benchmarks/<...>.tsv: one per job, named by rule (LOGS, JOB_BENCHMARKS).
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = "results"

# ----------------------------------------------------------------------------- stage 1: LLM
PROMPTS = "results/prompts/prompts.jsonl"
PROMPTS_SUMMARY = "results/prompts/prompts_summary.json"
QA = "results/prompts/qa.jsonl"
QA_SUMMARY = "results/prompts/qa_summary.json"

# ----------------------------------------------------------------------------- stages 2-4: per model
CANDIDATE_SHARD = "results/{model}/candidates/shard-{shard}.tar"
SCORES_SHARD = "results/{model}/scores/shard-{shard}.jsonl"
PAIRS = "results/{model}/pairs.jsonl"
PAIRS_SUMMARY = "results/{model}/pairs_summary.json"

# ----------------------------------------------------------------------------- stage 5: training
TRAIN_CACHE = "results/{model}/train_cache"
TRAIN_CHECKPOINTS = "results/{model}/train_checkpoints"
TRAINED = "results/{model}/agfsync"  # the rule's output directory
TRAINED_UNET = TRAINED + "/unet"
TRAIN_METRICS = TRAINED + "/metrics.jsonl"
TRAIN_SUMMARY = TRAINED + "/summary.json"

# ----------------------------------------------------------------------------- stage 6: evaluation
EVAL_PROMPTS = "results/eval/{bench}/prompts.jsonl"
MJHQ_REFERENCE = "results/eval/mjhq/reference_features.npz"
EVAL_SHARD = "results/{model}/eval/{variant}/{bench}/shard-{shard}.tar"
# Per-image file of an evaluation shard: {kind}-{shard}.{ext}, where kind and ext follow the
# benchmark (PER_IMAGE): scores-{shard}.jsonl for tifa and hpsv2, features-{shard}.npz for mjhq.
EVAL_PER_IMAGE = "results/{model}/eval/{variant}/{bench}/{kind}-{shard}.{ext}"
PER_IMAGE = {"tifa": ("scores", "jsonl"), "hpsv2": ("scores", "jsonl"), "mjhq": ("features", "npz")}
# Per-image rewards of an evaluation shard, one file per reward model (agfsync.core.rewards).
REWARD_PER_IMAGE = "results/{model}/eval/{variant}/{bench}/{reward}-{shard}.jsonl"
METRIC = "results/{model}/{metric}.json"
TRAJECTORY = "results/{model}/trajectory.json"  # proxy vs gold along training (eval_trajectory)

REPORT = "results/report.html"
METRICS_TSV = "results/metrics.tsv"
FIGURES = "results/figures"  # beside REPORT: agfsync.report.sections_figures.figures_folder

# ----------------------------------------------------------------------------- logs and benchmarks, by rule
LOGS = {
    "models_tiny": "logs/models/models_tiny.log",
    "world_build": "logs/models/world_build.log",
    "prompts_generate": "logs/prompts/prompts_generate.log",
    "qa_generate": "logs/prompts/qa_generate.log",
    "candidates_generate": "logs/{model}/candidates_generate/shard-{shard}.log",
    "candidates_score": "logs/{model}/candidates_score/shard-{shard}.log",
    "pairs_select": "logs/{model}/pairs_select.log",
    "train_cache": "logs/{model}/train_cache.log",
    "train_dpo": "logs/{model}/train_dpo.log",
    "eval_prompts": "logs/eval/eval_prompts/{bench}.log",
    "eval_generate": "logs/{model}/eval_generate/{variant}/{bench}/shard-{shard}.log",
    "eval_score": "logs/{model}/eval_score/{variant}/{bench}/{kind}-{shard}.{ext}.log",
    "eval_reward": "logs/{model}/eval_reward/{variant}/{bench}/{reward}-{shard}.log",
    "eval_reward_endpoint": "logs/{model}/eval_reward_endpoint/{variant}/{bench}/{reward}-{shard}.log",
    "eval_reference_mjhq": "logs/eval/eval_reference_mjhq.log",
    "eval_metric": "logs/{model}/eval_metric/{metric}.log",
    "eval_judge": "logs/{model}/eval_judge.log",
    "eval_trajectory": "logs/{model}/eval_trajectory.log",
    "report": "logs/report.log",
    "download_file": "logs/downloads/{download}.log",
    "download_hub": "logs/downloads/hub/{repo}.log",
}
JOB_BENCHMARKS = {  # Snakemake's `benchmark:` files (run time and memory of each job)
    "models_tiny": "benchmarks/models/models_tiny.tsv",
    "world_build": "benchmarks/models/world_build.tsv",
    "prompts_generate": "benchmarks/prompts/prompts_generate.tsv",
    "qa_generate": "benchmarks/prompts/qa_generate.tsv",
    "candidates_generate": "benchmarks/{model}/candidates_generate/shard-{shard}.tsv",
    "candidates_score": "benchmarks/{model}/candidates_score/shard-{shard}.tsv",
    "pairs_select": "benchmarks/{model}/pairs_select.tsv",
    "train_cache": "benchmarks/{model}/train_cache.tsv",
    "train_dpo": "benchmarks/{model}/train_dpo.tsv",
    "eval_generate": "benchmarks/{model}/eval_generate/{variant}/{bench}/shard-{shard}.tsv",
    "eval_score": "benchmarks/{model}/eval_score/{variant}/{bench}/{kind}-{shard}.{ext}.tsv",
    "eval_reward": "benchmarks/{model}/eval_reward/{variant}/{bench}/{reward}-{shard}.tsv",
    "eval_reward_endpoint": "benchmarks/{model}/eval_reward_endpoint/{variant}/{bench}/{reward}-{shard}.tsv",
    "eval_reference_mjhq": "benchmarks/eval/eval_reference_mjhq.tsv",
    "eval_trajectory": "benchmarks/{model}/eval_trajectory.tsv",
}


def per_image(model: str, variant: str, bench: str, shard: str) -> str:
    """The per-image scores or features file of one evaluation shard."""
    kind, ext = PER_IMAGE[bench]
    return EVAL_PER_IMAGE.format(model=model, variant=variant, bench=bench, kind=kind, shard=shard, ext=ext)


def fill(pattern: str, **values: str) -> str:
    """The pattern with some of its wildcards filled, the others left for Snakemake:
    fill(METRIC, metric="judge") == "results/{model}/judge.json"."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), m.group(0))), pattern)


def under(root: str | Path, path: str) -> Path:
    """A results path moved under another results directory (agfsync report --results DIR)."""
    return Path(root) / Path(path).relative_to(RESULTS)
