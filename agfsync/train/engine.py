"""The training engine: the only module that touches DeepSpeed and bitsandbytes.

Builds the client optimizer (bitsandbytes AdamW8bit or torch AdamW), the lr schedule,
and the DeepSpeed engine (ZeRO stage 0-3, gradient accumulation, clipping), whose checkpoint
loading goes through agfsync.train.checkpoints.safe_load (no arbitrary unpickling). Weights stay
fp32 (the master copy); bf16 is used through autocast in the forward pass, so a saved
model is the exact fp32 weights and 1e-6-sized updates are not lost to bf16 rounding.
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from agfsync.core.sections import TrainSettings

log = logging.getLogger(__name__)


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the base lr before optimizer step `step` (0-based): linear warmup
    from 1/warmup, then constant or cosine decay to 0 at total_steps."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"unknown lr schedule {schedule!r} (expected 'constant' or 'cosine')")


def make_optimizer(params, train: TrainSettings, lr: float):
    """The client optimizer of train.optimizer (train.adam_betas, train.weight_decay) at `lr`."""
    betas = tuple(train.adam_betas)
    weight_decay = train.weight_decay
    if train.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {train.optimizer!r} (expected 'adamw8bit' or 'adamw')")


# bitsandbytes' 8-bit optimizer kernels take a tensor's length as a 32-bit int (its CUDA backend:
# ct.c_int32(g.numel())), and ZeRO stage 1/2 flattens each param group into one tensor per rank
# that the client optimizer steps as one parameter: SDXL's 2.57B parameters as one group on one
# GPU would overflow. Groups of at most 2^30 elements change nothing in the update.
MAX_GROUP_ELEMENTS = 2**30


def param_groups(params, limit: int | None = None) -> list[dict]:
    """The parameters, in order, as consecutive optimizer param groups of at most `limit`
    (default MAX_GROUP_ELEMENTS) elements each; a single larger parameter gets a group of its own."""
    limit = limit or MAX_GROUP_ELEMENTS
    groups: list[dict] = []
    current, size = [], 0
    for p in params:
        if current and size + p.numel() > limit:
            groups.append({"params": current})
            current, size = [], 0
        current.append(p)
        size += p.numel()
    if current:
        groups.append({"params": current})
    return groups


def init_distributed(backend: str) -> tuple[int, int, int]:
    """(rank, world size, local rank), from torchrun's environment or a single process."""
    import deepspeed

    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as sock:  # a free port: a fixed one collides with other runs
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    deepspeed.init_distributed(dist_backend=backend, verbose=False)
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def build_engine(model, train: TrainSettings, lr: float, *, micro_batch: int, grad_accum: int, warmup_steps: int,
                 total_steps: int, autocast: bool = False):
    """The engine; `autocast`: the trainer runs the policy's forward under bf16 autocast, which
    DeepSpeed must be told of (torch_autocast), or it switches CUDA autocast off inside the
    engine's forward (deepspeed.runtime.torch_autocast.autocast_if_enabled) and the policy
    runs in fp32."""
    import deepspeed

    optimizer = make_optimizer(param_groups(p for p in model.parameters() if p.requires_grad), train, lr)
    schedule = train.lr_schedule
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, schedule))
    config = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "zero_optimization": {"stage": train.zero_stage},
        "zero_allow_untested_optimizer": True,  # bitsandbytes AdamW8bit as client optimizer
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train.grad_clip:
        config["gradient_clipping"] = train.grad_clip
    if autocast:
        # no lower-precision-safe modules: gradients are reduced in fp32, as without autocast
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    from agfsync.train.checkpoints import install_safe_loader

    install_safe_loader(engine)  # resuming never unpickles arbitrary objects (DeepSpeed's own load does)
    return engine


def full_state_dict(engine, zero_stage: int) -> dict | None:
    """The complete fp32 state dict on rank 0 (None elsewhere); every rank must call it."""
    import deepspeed
    import torch.distributed as dist

    module = engine.module
    rank = dist.get_rank() if dist.is_initialized() else 0
    if zero_stage == 3:
        params = list(module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if rank == 0 else None
        return state
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if rank == 0 else None
