"""Stage 5: Diffusion-DPO, the stage around agfsync.train.

  run_cache  rule train_cache  latents and text embeddings of every pair, once
                               (agfsync.train.data.build_train_cache)   `agfsync train-cache`
  run        rule train_dpo    torchrun (or srun torchrun) trains the UNet
                               (agfsync.train.launch.run_training)      `agfsync train`

Both are called by the rule's script and by the `agfsync` command, and hand the training
code the stage's typed settings as they are: what the rule declared (models.<model> and
train, with train.launch back from the full config), and the training process gets the
same object (agfsync.train.launch writes `settings.to_json()`, the trainer reads it back).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agfsync.core.sections import Settings


def run_cache(settings: Settings, inputs: Mapping, outputs: Mapping, *, model: str) -> dict:
    """Rule train_cache (`agfsync train-cache`): the pairs of inputs["pairs"] (their images and
    latents are read from the candidate shards the pairs name) encoded into the directory
    outputs["cache"]. Reads models.<model> (pretrained, revision, family, resolution),
    train.latents and train.cache_chunk."""
    from agfsync.train.data import build_train_cache

    return build_train_cache(settings, model, inputs["pairs"], outputs["cache"])


def run(settings: Settings, inputs: Mapping, outputs: Mapping, *, model: str, checkpoints, log=None,
        config_digest: str | None = None) -> int:
    """Rule train_dpo (`agfsync train`): train models.<model>'s UNet on the cache inputs["cache"]
    into the directory outputs["model"]; checkpoints (kept outside the outputs, so that a
    rerun resumes) in `checkpoints`; torchrun's output is appended to `log`. `config_digest`:
    agfsync.core.config.config_digest of the FULL config for this model (the job's settings
    hold only the declared sections), recorded in summary.json as config_hash."""
    from agfsync.train.launch import run_training

    return run_training(settings, model, inputs["cache"], outputs["model"], checkpoints, log_path=log,
                        config_digest=config_digest)
