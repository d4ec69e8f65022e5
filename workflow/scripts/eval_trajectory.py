"""Rule eval_trajectory: proxy reward and gold accuracy along training (agfsync.stages.trajectory).
The gold answerer of eval.tifa.gold ("world": the world's oracle) is passed from here:
agfsync.stages may not import agfsync.world."""

from agfsync.core.jobs import job
from agfsync.stages import trajectory
from agfsync.world import oracle

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    trajectory.run(j.settings, j.inputs, j.outputs, gold=oracle.answer, **j.wildcards)
