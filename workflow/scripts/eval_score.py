"""Rule eval_score: per-image scores (tifa, hpsv2) or FID features (mjhq) of one evaluation
shard (agfsync.stages.evaluate.run_score); the benchmark wildcard picks the scorer."""

from agfsync.core.jobs import job
from agfsync.stages import evaluate

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    evaluate.run_score(j.settings, j.inputs, j.outputs, **j.wildcards)
