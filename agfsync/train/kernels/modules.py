"""The UNet swap: GroupNorm (+ the SiLU after it) -> the fused Triton op (rule train_dpo).

diffusers' ResnetBlock2D runs `norm1 -> nonlinearity` and `norm2 -> nonlinearity`, but one
`nonlinearity` module serves both norms and also the time embedding (`silu(temb)`). So the
pairs cannot be fused by swapping modules one for one. Instead:
- each GroupNorm that SiLU follows directly becomes a FusedGroupNorm(silu=True), and its output
  tensor carries a mark;
- the block's SiLU becomes a PassThroughSiLU. It returns a marked tensor unchanged (its SiLU
  is already applied) and applies SiLU to anything else (the time embedding, and norm2's
  output in "scale_shift" blocks, where a scale and shift come between norm and SiLU);
- every other plain GroupNorm (the transformer blocks' input norm) becomes a
  FusedGroupNorm(silu=False).

FusedGroupNorm subclasses nn.GroupNorm and takes over the original weight and bias
Parameters. The swap keeps the same attribute names and adds no parameters, so state_dict
keys, shapes and values are unchanged: checkpoints load and save the same with or without
kernels. Where Triton cannot run for a tensor's device, the module runs the torch reference
and logs this once per device type.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from agfsync.train.kernels.runtime import triton_unavailable_reason

log = logging.getLogger(__name__)
_MARK = "_agfsync_silu_applied"
_RUNNABLE: dict[str, bool] = {}


def _triton_runs_on(device: torch.device) -> bool:
    if device.type not in _RUNNABLE:
        reason = triton_unavailable_reason(device)
        if reason is not None:
            log.warning("kernels: fused GroupNorm falls back to the torch reference on %s: %s", device.type, reason)
        _RUNNABLE[device.type] = reason is None
    return _RUNNABLE[device.type]


class FusedGroupNorm(nn.GroupNorm):
    """nn.GroupNorm (+ SiLU when `silu`) through agfsync.train.kernels.group_norm_silu."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, silu: bool = False):
        super().__init__(num_groups, num_channels, eps, affine=True, device="meta")
        self.silu = silu

    @classmethod
    def replacing(cls, norm: nn.GroupNorm, silu: bool) -> FusedGroupNorm:
        fused = cls(norm.num_groups, norm.num_channels, norm.eps, silu)
        fused.weight, fused.bias = norm.weight, norm.bias  # the same Parameters: nothing is copied
        fused.train(norm.training)
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _triton_runs_on(x.device):
            from agfsync.train.kernels.group_norm_silu import group_norm_silu

            y = group_norm_silu(x, self.weight, self.bias, self.num_groups, self.eps, self.silu)
        else:
            from agfsync.train.kernels.group_norm_silu import reference

            y = reference(x, self.weight, self.bias, self.num_groups, self.eps, self.silu)
        if self.silu:
            setattr(y, _MARK, True)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, silu={self.silu}"


class PassThroughSiLU(nn.SiLU):
    """SiLU, except for a tensor a FusedGroupNorm(silu=True) produced: that one already has it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if getattr(x, _MARK, False) else super().forward(x)


def _plain_group_norm(module) -> bool:
    return type(module) is nn.GroupNorm and module.affine


def swap_group_norm_silu(model: nn.Module) -> dict[str, int]:
    """Swap the kernels into a diffusers UNet in place; return how many norms of each kind were swapped."""
    from diffusers.models.resnet import ResnetBlock2D

    counts = {"group_norm_silu": 0, "group_norm": 0}

    def fuse(owner, name: str, silu: bool) -> None:
        setattr(owner, name, FusedGroupNorm.replacing(getattr(owner, name), silu))
        counts["group_norm_silu" if silu else "group_norm"] += 1

    for module in list(model.modules()):
        if isinstance(module, ResnetBlock2D) and type(module.nonlinearity) is nn.SiLU:
            if _plain_group_norm(module.norm1):
                fuse(module, "norm1", silu=True)
            if _plain_group_norm(module.norm2):
                # "default" blocks run norm2 -> SiLU; "scale_shift" puts a scale and shift in between
                fuse(module, "norm2", silu=module.time_embedding_norm == "default")
            module.nonlinearity = PassThroughSiLU()
    if _plain_group_norm(getattr(model, "conv_norm_out", None)) and type(getattr(model, "conv_act", None)) is nn.SiLU:
        fuse(model, "conv_norm_out", silu=True)  # UNet2DConditionModel: conv_norm_out -> conv_act -> conv_out
        model.conv_act = PassThroughSiLU()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if _plain_group_norm(child):
                fuse(module, name, silu=False)
    log.info("kernels: swapped %d GroupNorm+SiLU and %d GroupNorm modules for the fused Triton op",
             counts["group_norm_silu"], counts["group_norm"])
    return counts
