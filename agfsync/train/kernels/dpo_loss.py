"""Fused Diffusion-DPO loss: forward and backward in Triton, with its torch reference.

The loss of agfsync.train.loss.diffusion_dpo_loss (Wallace et al. eq. 14), from the trained
predictions pred_2B (winners then losers, as the trainer's single UNet call returns them),
the reference predictions ref_2B and the targets of winner and loser:

    mse_w = mean((pred_w - target_w)^2) per sample, likewise mse_l, ref_w, ref_l
    inside_B = -0.5 beta ((mse_w - ref_w) - (mse_l - ref_l));  loss = mean_B softplus(-inside_B)

Eager torch makes about a dozen passes: casts, differences, squares and means, each over a
full latent tensor. Its backward runs as many again and gathers the two halves of pred
through slicing. Here the forward reads each of the six inputs once. One program per pair
computes the four MSEs, inside, the pair's loss and the coefficient its backward needs. The
backward is one elementwise pass that writes d loss / d pred_2B straight into one tensor:

    d loss / d pred_w = +k_b * 2 (pred_w - target_w) / M,  d loss / d pred_l = -k_b * 2 (pred_l - target_l) / M
    k_b = 0.5 beta sigmoid(-inside_b) / B        (M = C*H*W elements per sample)

Inputs may be fp32, bf16 or fp16 (as autocast leaves them); all arithmetic is fp32, and the
gradient is written in pred's dtype. The mean over the B per-pair losses is a B-element torch
op. Doing it in-kernel would need atomics, whose order, and so whose rounding, varies.

Shapes (legend): B pairs, M elements per sample; pred_2B and ref_2B are [2B, C, H, W].
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from agfsync.train.loss import diffusion_dpo_loss
from agfsync.train.kernels.runtime import cdiv, empty

# Tuning constants, and why.
BLOCK_FWD = 1024  # elements per loop step per input: 6 loads of 8 elements per thread at 4 warps
BLOCK_BWD = 2048  # the backward is elementwise: a larger tile amortises the per-program scalar loads
NUM_WARPS = 4
STATS = ("mse_w", "mse_l", "ref_mse_w", "ref_mse_l", "inside", "loss", "coef")  # columns of the stats tensor


def reference(pred_2B, ref_2B, target_w_B, target_l_B, beta: float):
    """The pure-torch op: agfsync.train.loss's loss on the two halves (what the trainer runs without kernels)."""
    b = target_w_B.shape[0]
    return diffusion_dpo_loss(pred_2B[:b], pred_2B[b:], ref_2B[:b], ref_2B[b:], target_w_B, target_l_B, beta)


@triton.jit
def _forward_kernel(PRED, REF, TW, TL, STATS, B, beta, M: tl.constexpr, BLOCK: tl.constexpr):
    """One program per pair b: the four squared-error sums in one pass, then the pair's scalars. M is a
    compile-time constant (one latent size per run): the interpreter cannot loop to a runtime scalar."""
    b = tl.program_id(0)
    w_row = b.to(tl.int64) * M
    l_row = (b + B).to(tl.int64) * M
    acc_w = tl.zeros([BLOCK], dtype=tl.float32)
    acc_l = tl.zeros([BLOCK], dtype=tl.float32)
    acc_rw = tl.zeros([BLOCK], dtype=tl.float32)
    acc_rl = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, M, BLOCK):
        i = start + tl.arange(0, BLOCK)
        mask = i < M
        tw = tl.load(TW + w_row + i, mask=mask, other=0.0).to(tl.float32)
        tl_ = tl.load(TL + w_row + i, mask=mask, other=0.0).to(tl.float32)
        d = tl.load(PRED + w_row + i, mask=mask, other=0.0).to(tl.float32) - tw
        acc_w += d * d
        d = tl.load(PRED + l_row + i, mask=mask, other=0.0).to(tl.float32) - tl_
        acc_l += d * d
        d = tl.load(REF + w_row + i, mask=mask, other=0.0).to(tl.float32) - tw
        acc_rw += d * d
        d = tl.load(REF + l_row + i, mask=mask, other=0.0).to(tl.float32) - tl_
        acc_rl += d * d
    mse_w = tl.sum(acc_w, axis=0) / M
    mse_l = tl.sum(acc_l, axis=0) / M
    ref_w = tl.sum(acc_rw, axis=0) / M
    ref_l = tl.sum(acc_rl, axis=0) / M
    inside = -0.5 * beta * ((mse_w - ref_w) - (mse_l - ref_l))
    # softplus(-inside) = -log sigmoid(inside)
    e = tl.exp(-tl.abs(inside))  # in (0, 1]: neither softplus nor sigmoid below can overflow
    loss = tl.maximum(-inside, 0.0) + tl.log(1.0 + e)
    coef = 0.5 * beta * tl.where(inside >= 0, e / (1.0 + e), 1.0 / (1.0 + e)) / B  # 0.5 beta sigmoid(-inside) / B
    row = STATS + b * 7
    tl.store(row + 0, mse_w)
    tl.store(row + 1, mse_l)
    tl.store(row + 2, ref_w)
    tl.store(row + 3, ref_l)
    tl.store(row + 4, inside)
    tl.store(row + 5, loss)
    tl.store(row + 6, coef)


@triton.jit
def _backward_kernel(PRED, TW, TL, STATS, GRAD_OUT, DPRED, B, M: tl.constexpr, BLOCK: tl.constexpr):
    """Row r of pred_2B (winner r < B, loser r - B otherwise), one block of its M elements."""
    r = tl.program_id(0)
    is_w = r < B
    pair = tl.where(is_w, r, r - B)
    scale = tl.load(STATS + pair * 7 + 6) * tl.load(GRAD_OUT).to(tl.float32) * 2.0 / M
    scale = tl.where(is_w, scale, -scale)
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = i < M
    row = r.to(tl.int64) * M
    t_row = pair.to(tl.int64) * M
    pred = tl.load(PRED + row + i, mask=mask, other=0.0).to(tl.float32)
    if is_w:
        target = tl.load(TW + t_row + i, mask=mask, other=0.0).to(tl.float32)
    else:
        target = tl.load(TL + t_row + i, mask=mask, other=0.0).to(tl.float32)
    tl.store(DPRED + row + i, (scale * (pred - target)).to(DPRED.dtype.element_ty), mask=mask)


def _check(pred_2B, ref_2B, target_w_B, target_l_B):
    b = target_w_B.shape[0]
    want = (2 * b, *target_w_B.shape[1:])
    for name, t in (("pred", pred_2B), ("ref", ref_2B)):
        if tuple(t.shape) != want:
            raise ValueError(f"dpo_loss: {name} must have shape {want} (winners then losers), got {tuple(t.shape)}")
    if target_l_B.shape != target_w_B.shape:
        raise ValueError(f"dpo_loss: target_l shape {tuple(target_l_B.shape)} != target_w {tuple(target_w_B.shape)}")


def forward(pred_2B, ref_2B, target_w_B, target_l_B, beta: float) -> torch.Tensor:
    """stats [B, 7] fp32 (columns: STATS)."""
    _check(pred_2B, ref_2B, target_w_B, target_l_B)
    b = target_w_B.shape[0]
    m = target_w_B[0].numel()
    stats = empty((b, len(STATS)), torch.float32, pred_2B.device)
    _forward_kernel[(b,)](pred_2B.contiguous(), ref_2B.contiguous(), target_w_B.contiguous(),
                          target_l_B.contiguous(), stats, b, float(beta), M=m, BLOCK=BLOCK_FWD, num_warps=NUM_WARPS)
    return stats


def backward(grad_out, pred_2B, target_w_B, target_l_B, stats) -> torch.Tensor:
    b = target_w_B.shape[0]
    m = target_w_B[0].numel()
    pred_2B = pred_2B.contiguous()
    dpred = empty(None, pred_2B.dtype, pred_2B.device, like=pred_2B)
    _backward_kernel[(2 * b, cdiv(m, BLOCK_BWD))](pred_2B, target_w_B.contiguous(), target_l_B.contiguous(), stats,
                                                   grad_out.contiguous(), dpred, b, M=m, BLOCK=BLOCK_BWD,
                                                   num_warps=NUM_WARPS)
    return dpred


class DPOLossFunction(torch.autograd.Function):
    """(loss, stats): stats carries no gradient; only pred_2B receives one (ref and targets are constants)."""

    @staticmethod
    def forward(ctx, pred_2B, ref_2B, target_w_B, target_l_B, beta: float):
        stats = forward(pred_2B, ref_2B, target_w_B, target_l_B, beta)
        ctx.save_for_backward(pred_2B, target_w_B, target_l_B, stats)
        ctx.mark_non_differentiable(stats)
        return stats[:, 5].mean(), stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        pred_2B, target_w_B, target_l_B, stats = ctx.saved_tensors
        return backward(grad_loss, pred_2B, target_w_B, target_l_B, stats), None, None, None, None


def dpo_loss(pred_2B, ref_2B, target_w_B, target_l_B, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, detached metrics), the same contract as agfsync.train.loss.diffusion_dpo_loss."""
    loss, stats = DPOLossFunction.apply(pred_2B, ref_2B.detach(), target_w_B.detach(), target_l_B.detach(), beta)
    inside = stats[:, 4]
    metrics = {
        "loss": loss.detach(), "implicit_acc": ((inside > 0).float() + 0.5 * (inside == 0).float()).mean(),
        "reward_margin": inside.mean(), "mse_w": stats[:, 0].mean(), "mse_l": stats[:, 1].mean(),
        "ref_mse_w": stats[:, 2].mean(), "ref_mse_l": stats[:, 3].mean(),
    }
    return loss, metrics
