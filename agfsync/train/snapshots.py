"""UNet snapshots during training (train.snapshots): the weights at given fractions of the
steps, for the proxy-vs-gold trajectory (rule eval_trajectory, agfsync.stages.trajectory).

A snapshot is the full UNet in diffusers format (safetensors, fp32; LoRA adapters fused in),
written on rank 0 to {checkpoints}/snapshots/step-{N:06d}/unet, atomically (a temporary
sibling, then renamed): the checkpoint directory outlives a failed job, so a resumed run
keeps the snapshots taken before it stopped and takes the rest. The final model directory
gets a copy of all of them in snapshots/ (`collect`), next to unet/, metrics.jsonl and
summary.json. Every rank calls `save` (ZeRO-3 gathers the parameters from all ranks).
"""

from __future__ import annotations

import shutil
from pathlib import Path

SUBDIR = "snapshots"


def snapshot_steps(fractions, total: int) -> list[int]:
    """The optimizer steps (1 .. total-1) at which snapshots are taken: round(f x total) for
    each fraction, without duplicates; 0 (the base model) and total (the final model) are
    not snapshots."""
    steps = {round(f * total) for f in fractions}
    return sorted(s for s in steps if 0 < s < total)


def step_dir(root, step: int) -> Path:
    return Path(root) / SUBDIR / f"step-{step:06d}"


def save(engine, zero_stage: int, lora: bool, rank: int, checkpoints, step: int) -> Path | None:
    """Write the UNet of `step` (all ranks call; rank 0 writes); its directory on rank 0."""
    from diffusers import UNet2DConditionModel

    from agfsync.train.engine import full_state_dict

    module = engine.module
    if lora:
        module.fuse_lora()
    try:
        state = full_state_dict(engine, zero_stage)
    finally:
        if lora:
            module.unfuse_lora()
    if rank != 0:
        return None
    if lora:  # the fused base weights under peft's names, without the adapters
        state = {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
    unet = UNet2DConditionModel.from_config(module.config)
    unet.load_state_dict(state)
    final = step_dir(checkpoints, step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def collect(checkpoints, out_dir, steps: list[int]) -> list[int]:
    """Copy the snapshots of `steps` from the checkpoint directory into out_dir/snapshots;
    a missing one is an error (it was taken before a resume that lost it)."""
    copied = []
    for step in steps:
        source = step_dir(checkpoints, step)
        if not (source / "unet").is_dir():
            raise FileNotFoundError(f"snapshot of step {step} missing in {source} (train.snapshots); delete "
                                    f"{checkpoints} to retrain from the start")
        shutil.copytree(source, step_dir(out_dir, step))
        copied.append(step)
    return copied
