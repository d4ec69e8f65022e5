"""The DPO trainer's build steps: each turns part of the typed settings into one piece of a
agfsync.train.trainer.DPOTrainer, which runs them in this file's order:

    build_backend -> build_distributed -> build_grad_accum -> (PairCache) -> build_unet,
    build_noise_scheduler -> build_lora or build_reference -> place_models -> build_kernels
    -> build_deepspeed

The order is part of the result: the reference is copied from the UNet before the policy
is moved and gets gradient checkpointing, and the Triton kernels are swapped into both
UNets before DeepSpeed wraps the policy. No step draws from torch's global generator (the
LoRA initialisation is seeded from the config on a forked one).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from typing import TYPE_CHECKING, Callable

import torch

from agfsync.core.seeds import derive_seed

if TYPE_CHECKING:
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from agfsync.core.sections import ModelSettings, ModelTrainSettings, Settings, TrainSettings

log = logging.getLogger(__name__)

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


class TrainConfigError(ValueError):
    """A training setting that cannot work (batch arithmetic, GPU count, unsupported combination)."""


def build_backend(settings: Settings) -> tuple[bool, str]:
    """(whether this run uses CUDA, the process group's backend), checked against the visible GPUs."""
    cuda = settings.device != "cpu" and torch.cuda.is_available()
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError("device is 'cuda' but no CUDA device is visible")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if cuda and torch.cuda.device_count() < local_world:
        raise TrainConfigError(f"train.gpus asks for {local_world} GPUs per node but this node has "
                               f"{torch.cuda.device_count()} CUDA device(s)")
    backend = settings.train.launch.backend
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    elif backend == "nccl" and not cuda:
        raise TrainConfigError("train.launch.backend is 'nccl' but this run has no CUDA device (use gloo or auto)")
    return cuda, backend


def build_distributed(backend: str, cuda: bool) -> tuple[int, int, int, torch.device]:
    """(rank, world size, local rank, device): joins the process group (world size 1 without
    torchrun's environment) and selects this rank's GPU."""
    from agfsync.train.engine import init_distributed

    rank, world, local_rank = init_distributed(backend)
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()  # SLURM's node name where there is one
    log.info("train: rank %d of %d on %s, backend %s", rank, world, node, backend)
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return rank, world, local_rank, device


def use_autocast(precision: str, cuda: bool) -> bool:
    """bf16 autocast in the forward passes: train.precision bf16, or auto on a GPU."""
    return precision == "bf16" or (precision == "auto" and cuda)


def build_grad_accum(hp: ModelTrainSettings, model_name: str, world: int) -> int:
    """Micro-batches per optimizer step: micro_batch x accumulation x world size = global_batch."""
    micro, global_batch = hp.micro_batch, hp.global_batch
    if global_batch % (micro * world):
        raise TrainConfigError(f"models.{model_name}.train.global_batch ({global_batch}) must be a multiple of "
                               f"micro_batch ({micro}) x processes ({world})")
    return global_batch // (micro * world)


def build_unet(model: ModelSettings) -> UNet2DConditionModel:
    """The pretrained UNet in fp32 (the master weights), on the CPU."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(model.pretrained, subfolder="unet", revision=model.revision,
                                                dtype=torch.float32)


def build_noise_scheduler(model: ModelSettings) -> DDPMScheduler:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_pretrained(model.pretrained, subfolder="scheduler")


def build_lora(unet: UNet2DConditionModel, rank: int, train: TrainSettings, seed: int, model_name: str) -> None:
    """Freeze the UNet and add LoRA adapters of `rank` (train.lora_rank), in place. The
    reference is then the same UNet with its adapters disabled."""
    if train.zero_stage == 3:
        raise TrainConfigError("train.lora_rank with train.zero_stage 3 is not supported; use stage 0-2")
    from peft import LoraConfig

    unet.requires_grad_(False)
    # peft draws the adapters' initial weights from torch's global generator: seed it from the
    # config (and restore it after), or every run starts from different adapters
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "lora_init", model_name))
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS))


def build_reference(unet: UNet2DConditionModel, device: torch.device, autocast: bool) -> UNet2DConditionModel:
    """A frozen copy of the UNet on the device, never CPU-offloaded; bf16 under autocast
    (frozen: bf16 halves its memory)."""
    ref_dtype = torch.bfloat16 if autocast else torch.float32
    return copy.deepcopy(unet).to(device, ref_dtype).requires_grad_(False).eval()


def place_models(unet: UNet2DConditionModel, reference: UNet2DConditionModel | None, train: TrainSettings,
                 device: torch.device) -> None:
    """The policy on the device in train mode with train.gradient_checkpointing; both UNets
    with the train.attention backend."""
    from agfsync.models.attention import configure_attention

    unet.to(device).train()
    if train.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    for model in (unet, reference):
        if model is not None:
            configure_attention(model, train.attention, device)


def build_kernels(unet: UNet2DConditionModel, reference: UNet2DConditionModel | None, train: TrainSettings,
                  device: torch.device) -> tuple[bool, Callable | None]:
    """(whether the Triton kernels run, the fused loss or None) for train.kernels. With
    kernels: the start-up check on this device, then fused GroupNorm+SiLU swapped into both
    UNets, and the fused DPO loss (pred_2B, ref_2B, target_w, target_l, beta) -> (loss,
    metrics) when train.loss is 'dpo'."""
    from agfsync.train.kernels.runtime import use_triton

    if not use_triton(train.kernels, device):
        return False, None
    from agfsync.train.kernels.modules import swap_group_norm_silu
    from agfsync.train.kernels.self_check import check_kernels

    check_kernels(device)  # the compiled kernels on this GPU, before they touch the model
    for model in (unet, reference):
        if model is not None:
            swap_group_norm_silu(model)
    if train.loss != "dpo":
        log.info("kernels: the fused loss implements train.loss 'dpo'; %r runs in torch", train.loss)
        return True, None
    from agfsync.train.kernels.dpo_loss import dpo_loss

    return True, dpo_loss


def build_deepspeed(unet: UNet2DConditionModel, train: TrainSettings, hp: ModelTrainSettings, grad_accum: int,
                    autocast: bool = False):
    """The DeepSpeed engine around the policy (agfsync.train.engine: optimizer, lr schedule, ZeRO,
    the policy's bf16 autocast)."""
    from agfsync.train.engine import build_engine

    return build_engine(unet, train, hp.lr, micro_batch=hp.micro_batch, grad_accum=grad_accum,
                        warmup_steps=hp.warmup_steps, total_steps=hp.steps, autocast=autocast)
