"""Rule world_build: train the world's models (agfsync.world.build.build)."""

from agfsync.core.jobs import job
from agfsync.world.build import build

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    build(j.outputs["models"], seed=j.settings.world.seed, command="snakemake world_build --cores 2")
