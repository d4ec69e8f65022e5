"""Rule eval_judge: VLM judge of base vs AGFSync images -> results/{model}/judge.json (agfsync.stages.judge.run)."""

from agfsync.core.jobs import job
from agfsync.stages import judge

with job(snakemake) as j:  # noqa: F821 (snakemake is injected)
    judge.run(j.settings, j.inputs, j.outputs, config_hash=j.params["config_hash"], hub=j.params.get("hub"),
              **j.wildcards)
