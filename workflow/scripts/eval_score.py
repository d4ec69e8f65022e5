"""Rule eval_score: per-image scores (tifa, hpsv2) or FID features (mjhq) of one evaluation
shard (agfsync.stages.evaluate.run_score); the benchmark wildcard picks the scorer. The gold
answerer of eval.tifa.gold ("world": the world's oracle) is passed from here: agfsync.stages
may not import agfsync.world."""

from agfsync.core.jobs import job
from agfsync.stages import evaluate
from agfsync.world import oracle

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    evaluate.run_score(j.settings, j.inputs, j.outputs, gold=oracle.answer, **j.wildcards)
