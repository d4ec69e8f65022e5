"""Fused GroupNorm (+ SiLU): forward and backward in Triton, with its torch reference.

Every ResNet block of the SD and SDXL UNets runs GroupNorm(32 groups) then SiLU twice.
Both are memory-bound. Eager PyTorch reads and writes the activation once per op (and, under
bf16 autocast, once more for each fp32 cast). Training also keeps the GroupNorm output alive
for SiLU's backward. The fused op reads the activation in its own dtype, does all the math in
fp32, and writes the result once, in the input dtype. For backward it saves only the input
and two fp32 numbers per (sample, group).

    y = silu((x - mean_ng) * rstd_ng * w_c + b_c)      (silu optional)

Statistics are in fp32 whatever the input dtype: per-channel sums shifted by the channel's
first element, which avoids the cancellation of sum(x^2) - n*mean^2 when |mean| >> std.
They are combined over the channels of a group with Chan's formula. Under bf16 autocast the
output stays bf16, where torch's autocast would give fp32. Every consumer in the UNet is an
autocast conv or linear that rounds its input to bf16 anyway, and the rounding happens after
the SiLU in both cases, so the numbers match.

Shapes (legend): N samples, C channels, G groups, CPG = C / G channels per group, HW the
flattened spatial size; K chunks of the spatial axis, one program each (parallelism when N*C
is small). The kernels see x as [N, C, HW] with strides, so NCHW-contiguous and
channels_last share one code path. Only the tile shape differs: long along HW for NCHW,
wide along C for channels_last, so that loads are coalesced on the contiguous axis.

Groups of at most SMALL_GROUP_MAX elements skip all this: group_norm_small.py runs one
program per group, one launch each way (host time per launch outweighs GPU time there).

Forward (3 launches): per-(n, chunk, c) partial sums -> per-(n, g) mean and rstd -> y.
Backward (3 launches): per-(n, chunk, c) partial sums of dz and dz * xhat (dz = the gradient
before SiLU) -> per-g weight and bias gradients plus per-(n, g) coefficients -> dx.
Every reduction runs in a fixed order with no atomics, so results are bitwise deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from agfsync.train.kernels import group_norm_small
from agfsync.train.kernels.group_norm_small import _dz as _grad_before_silu
from agfsync.train.kernels.group_norm_small import _group_moments, _program_group
from agfsync.train.kernels.runtime import cdiv, empty, next_power_of_2

# Tuning constants, and why.
TILE_ELEMENTS = 4096  # elements per program tile: 16 per thread at 8 warps, enough loads in flight to cover HBM latency
MAX_CHUNKS = 64  # chunks of HW per (n, c-block): >= 4 waves on 132 SMs for SD shapes; the group kernels load all chunks at once
NUM_WARPS = 8  # sm_90 compile (agfsync.train.kernels.compile_check): 4 warps needed 140-255 registers per thread, 8 need 60-190
# Groups of at most this many elements (C / G channels x HW) run in one program per group, one launch each
# way (group_norm_small.py); larger ones take the chunked kernels below. 0 turns the small path off. On the
# H200 (bench/measurements/gpu_probe_h200.json, bf16, N = 2) a call costs more host time than GPU time at
# every UNet shape, and with its 2 launches instead of 6 the small path had the lower host-inclusive
# forward + backward time up to 81,920 elements per group; at 163,840 the chunked kernels won (0.27 ms
# against 0.34; on the GPU alone 0.06 ms against 0.31).
SMALL_GROUP_MAX = 1 << 17


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int, eps: float,
              silu: bool = True) -> torch.Tensor:
    """The pure-torch op (what the UNet does without kernels): GroupNorm, then SiLU."""
    y = F.group_norm(x, num_groups, weight, bias, eps)
    return F.silu(y) if silu else y


# ---------------------------------------------------------------------------------- kernels


@triton.jit
def _tile(offset, c, c_mask, k, start, HW, stride_c, stride_hw, CHUNK: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Offsets and mask of one [BLOCK_C, BLOCK_HW] tile: channels c, the loop step `start` of chunk k."""
    hw = k * CHUNK + start + tl.arange(0, BLOCK_HW)
    mask = c_mask[:, None] & (hw < HW)[None, :]
    return offset + c[:, None] * stride_c + hw[None, :] * stride_hw, mask


@triton.jit
def _stats_kernel(X, S1, S2, C, HW, stride_n, stride_c, stride_hw, num_chunks,
                  CHUNK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Partial shifted sums per channel over one chunk of HW: S1 = sum(x - x0), S2 = sum((x - x0)^2)."""
    n = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    k = tl.program_id(2)
    c_mask = c < C
    offset = n.to(tl.int64) * stride_n
    shift = tl.load(X + offset + c * stride_c, mask=c_mask, other=0.0).to(tl.float32)
    acc1 = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    for start in range(0, CHUNK, BLOCK_HW):
        ptr, mask = _tile(offset, c, c_mask, k, start, HW, stride_c, stride_hw, CHUNK, BLOCK_HW)
        v = tl.load(X + ptr, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, v - shift[:, None], 0.0)
        acc1 += d
        acc2 += d * d
    out = (n * num_chunks + k) * C + c
    tl.store(S1 + out, tl.sum(acc1, axis=1), mask=c_mask)
    tl.store(S2 + out, tl.sum(acc2, axis=1), mask=c_mask)


@triton.jit
def _group_stats_kernel(X, S1, S2, Mean, Rstd, C, HW, G, CPG, stride_n, stride_c, num_chunks, eps,
                        BLOCK_K: tl.constexpr, BLOCK_CPG: tl.constexpr):
    """Per (n, g): combine the chunks and channels of the group into mean and 1/std (biased variance)."""
    pid, n, g, c, c_mask = _program_group(G, CPG, BLOCK_CPG)
    kk = tl.arange(0, BLOCK_K)
    mask = (kk < num_chunks)[:, None] & c_mask[None, :]
    idx = (n * num_chunks + kk[:, None]) * C + c[None, :]
    s1 = tl.sum(tl.load(S1 + idx, mask=mask, other=0.0), axis=0)
    s2 = tl.sum(tl.load(S2 + idx, mask=mask, other=0.0), axis=0)
    shift = tl.load(X + n.to(tl.int64) * stride_n + c * stride_c, mask=c_mask, other=0.0).to(tl.float32)
    mean, rstd = _group_moments(shift, s1, s2, c_mask, HW, CPG, eps)
    tl.store(Mean + pid, mean)
    tl.store(Rstd + pid, rstd)


@triton.jit
def _channel_params(Mean, Rstd, W, B, n, c, c_mask, G, CPG):
    """Per channel of the tile: its group's mean and rstd, its weight and bias (all fp32), and the
    (n, g) index of its group's statistics."""
    stat = n * G + c // CPG
    mean = tl.load(Mean + stat, mask=c_mask, other=0.0)
    rstd = tl.load(Rstd + stat, mask=c_mask, other=0.0)
    w = tl.load(W + c, mask=c_mask, other=0.0).to(tl.float32)
    b = tl.load(B + c, mask=c_mask, other=0.0).to(tl.float32)
    return stat, mean, rstd, w, b


@triton.jit
def _apply_kernel(X, Y, W, B, Mean, Rstd, C, HW, G, CPG, stride_n, stride_c, stride_hw,
                  CHUNK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, SILU: tl.constexpr):
    """y = silu(x * scale_c + shift_c) with scale = w * rstd, shift = b - mean * scale. Y has X's strides."""
    n = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    k = tl.program_id(2)
    c_mask = c < C
    _, mean, rstd, w, b = _channel_params(Mean, Rstd, W, B, n, c, c_mask, G, CPG)
    scale = w * rstd
    shift = b - mean * scale
    offset = n.to(tl.int64) * stride_n
    for start in range(0, CHUNK, BLOCK_HW):
        ptr, mask = _tile(offset, c, c_mask, k, start, HW, stride_c, stride_hw, CHUNK, BLOCK_HW)
        z = tl.load(X + ptr, mask=mask, other=0.0).to(tl.float32) * scale[:, None] + shift[:, None]
        if SILU:
            z = z * tl.sigmoid(z)
        tl.store(Y + ptr, z.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_partials_kernel(X, DY, Mean, Rstd, W, B, PDB, PDS, C, HW, G, CPG, stride_n, stride_c, stride_hw,
                         num_chunks, CHUNK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                         SILU: tl.constexpr):
    """Partial sums per channel over one chunk: PDB = sum(dz), PDS = sum(dz * xhat). DY has X's strides."""
    n = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    k = tl.program_id(2)
    c_mask = c < C
    stat, mean, rstd, w, b = _channel_params(Mean, Rstd, W, B, n, c, c_mask, G, CPG)
    mean, rstd, w, b = mean[:, None], rstd[:, None], w[:, None], b[:, None]
    offset = n.to(tl.int64) * stride_n
    acc_db = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    acc_ds = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    for start in range(0, CHUNK, BLOCK_HW):
        ptr, mask = _tile(offset, c, c_mask, k, start, HW, stride_c, stride_hw, CHUNK, BLOCK_HW)
        x = tl.load(X + ptr, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + ptr, mask=mask, other=0.0).to(tl.float32)
        xhat, dz = _grad_before_silu(x, dy, mean, rstd, w, b, SILU)
        dz = tl.where(mask, dz, 0.0)
        acc_db += dz
        acc_ds += dz * xhat
    out = (n * num_chunks + k) * C + c
    tl.store(PDB + out, tl.sum(acc_db, axis=1), mask=c_mask)
    tl.store(PDS + out, tl.sum(acc_ds, axis=1), mask=c_mask)


@triton.jit
def _bwd_group_kernel(PDB, PDS, W, DW, DB, C1, C2, C, HW, G, CPG, num_chunks, N: tl.constexpr,
                      BLOCK_K: tl.constexpr, BLOCK_CPG: tl.constexpr):
    """Per group g, looping over samples in order: dw_c = sum(dz xhat), db_c = sum(dz); and per (n, g)
    c1 = mean(dz w xhat), c2 = mean(dz w) over the group, the two terms of GroupNorm's backward.
    N is a compile-time constant: the interpreter cannot loop over a runtime scalar (numpy 2.x refuses
    int() of its one-element array), and the batch size of a training run never changes."""
    g = tl.program_id(0)
    j = tl.arange(0, BLOCK_CPG)
    c = g * CPG + j
    c_mask = j < CPG
    kk = tl.arange(0, BLOCK_K)
    mask = (kk < num_chunks)[:, None] & c_mask[None, :]
    w = tl.load(W + c, mask=c_mask, other=0.0).to(tl.float32)
    count = CPG * HW
    dw = tl.zeros([BLOCK_CPG], dtype=tl.float32)
    db = tl.zeros([BLOCK_CPG], dtype=tl.float32)
    for n in range(N):
        idx = (n * num_chunks + kk[:, None]) * C + c[None, :]
        db_n = tl.sum(tl.load(PDB + idx, mask=mask, other=0.0), axis=0)
        ds_n = tl.sum(tl.load(PDS + idx, mask=mask, other=0.0), axis=0)
        db += db_n
        dw += ds_n
        tl.store(C1 + n * G + g, tl.sum(ds_n * w, axis=0) / count)
        tl.store(C2 + n * G + g, tl.sum(db_n * w, axis=0) / count)
    tl.store(DW + c, dw.to(DW.dtype.element_ty), mask=c_mask)
    tl.store(DB + c, db.to(DB.dtype.element_ty), mask=c_mask)


@triton.jit
def _bwd_dx_kernel(X, DY, DX, Mean, Rstd, W, B, C1, C2, C, HW, G, CPG, stride_n, stride_c, stride_hw,
                   CHUNK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, SILU: tl.constexpr):
    """dx = rstd * (dz * w - c2 - xhat * c1). DY and DX have X's strides."""
    n = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    k = tl.program_id(2)
    c_mask = c < C
    stat, mean, rstd, w, b = _channel_params(Mean, Rstd, W, B, n, c, c_mask, G, CPG)
    mean, rstd, w, b = mean[:, None], rstd[:, None], w[:, None], b[:, None]
    c1 = tl.load(C1 + stat, mask=c_mask, other=0.0)[:, None]
    c2 = tl.load(C2 + stat, mask=c_mask, other=0.0)[:, None]
    offset = n.to(tl.int64) * stride_n
    for start in range(0, CHUNK, BLOCK_HW):
        ptr, mask = _tile(offset, c, c_mask, k, start, HW, stride_c, stride_hw, CHUNK, BLOCK_HW)
        x = tl.load(X + ptr, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + ptr, mask=mask, other=0.0).to(tl.float32)
        xhat, dz = _grad_before_silu(x, dy, mean, rstd, w, b, SILU)
        dx = rstd * (dz * w - c2 - xhat * c1)
        tl.store(DX + ptr, dx.to(DX.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------- launchers


@dataclass(frozen=True)
class Tiling:
    """How [N, C, HW] is cut into program tiles. Tests pass small ones to exercise masks and chunk loops."""

    block_c: int
    block_hw: int
    chunk: int  # HW elements per program (a multiple of block_hw)
    num_chunks: int


def _as_nc_hw(x: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """x (N, C, *spatial) -> (x, stride_n, stride_c, stride_hw) of its [N, C, HW] view; NCHW or channels_last."""
    if x.dim() < 2:
        raise ValueError(f"group_norm_silu expects (N, C, *spatial), got shape {tuple(x.shape)}")
    if x.is_contiguous():
        return x, x.stride(0), x.stride(1), 1
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x, x.stride(0), 1, x.shape[1]
    x = x.contiguous()
    return x, x.stride(0), x.stride(1), 1


def tiling(num_channels: int, hw: int, channels_contiguous: bool, block_hw: int | None = None,
           max_chunks: int = MAX_CHUNKS) -> Tiling:
    if channels_contiguous:  # channels_last: a row of channels is contiguous, tile wide along C
        block_c = min(next_power_of_2(num_channels), 64)
        block_hw = block_hw or max(1, TILE_ELEMENTS // block_c)
    else:  # NCHW: each channel's HW run is contiguous, tile long along HW
        block_hw = block_hw or min(next_power_of_2(hw), 1024)
        block_c = min(next_power_of_2(num_channels), max(1, TILE_ELEMENTS // block_hw))
    blocks = cdiv(hw, block_hw)
    chunk = block_hw * cdiv(blocks, min(blocks, max_chunks))
    return Tiling(block_c, block_hw, chunk, cdiv(hw, chunk))


SMALL = "small"  # the tile of group_norm_small's one program per group


def plan(num_channels: int, hw: int, num_groups: int, channels_contiguous: bool) -> Tiling | str:
    """SMALL when a group has at most SMALL_GROUP_MAX elements, else the chunked kernels' tiling."""
    if num_channels // num_groups * hw <= SMALL_GROUP_MAX:
        return SMALL
    return tiling(num_channels, hw, channels_contiguous)


def _check(x, weight, bias, num_groups):
    num_channels = x.shape[1]
    if num_channels % num_groups:
        raise ValueError(f"group_norm_silu: {num_channels} channels are not divisible into {num_groups} groups")
    for name, t in (("weight", weight), ("bias", bias)):
        if t.shape != (num_channels,) or not t.is_contiguous():
            raise ValueError(f"group_norm_silu: {name} must be a contiguous ({num_channels},) tensor, "
                             f"got {tuple(t.shape)}")


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int, eps: float, silu: bool,
            tile: Tiling | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean_NG, rstd_NG): y has x's dtype and memory format; the statistics are fp32."""
    _check(x, weight, bias, num_groups)
    x, s_n, s_c, s_hw = _as_nc_hw(x)
    n, c = x.shape[:2]
    hw = x[0, 0].numel()
    tile = tile or plan(c, hw, num_groups, s_c == 1 and c > 1)
    if tile == SMALL:
        return group_norm_small.forward(x, s_n, s_c, s_hw, weight, bias, num_groups, eps, silu)
    cpg = c // num_groups
    s1 = empty((n, tile.num_chunks, c), torch.float32, x.device)
    s2 = empty((n, tile.num_chunks, c), torch.float32, x.device)
    mean = empty((n, num_groups), torch.float32, x.device)
    rstd = empty((n, num_groups), torch.float32, x.device)
    y = empty(None, x.dtype, x.device, like=x)
    grid = (n, cdiv(c, tile.block_c), tile.num_chunks)
    _stats_kernel[grid](x, s1, s2, c, hw, s_n, s_c, s_hw, tile.num_chunks,
                        CHUNK=tile.chunk, BLOCK_C=tile.block_c, BLOCK_HW=tile.block_hw, num_warps=NUM_WARPS)
    _group_stats_kernel[(n * num_groups,)](x, s1, s2, mean, rstd, c, hw, num_groups, cpg, s_n, s_c,
                                           tile.num_chunks, eps, BLOCK_K=next_power_of_2(tile.num_chunks),
                                           BLOCK_CPG=next_power_of_2(cpg), num_warps=NUM_WARPS)
    _apply_kernel[grid](x, y, weight, bias, mean, rstd, c, hw, num_groups, cpg, s_n, s_c, s_hw,
                        CHUNK=tile.chunk, BLOCK_C=tile.block_c, BLOCK_HW=tile.block_hw, SILU=silu,
                        num_warps=NUM_WARPS)
    return y, mean, rstd


def backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
             rstd: torch.Tensor, num_groups: int, silu: bool,
             tile: Tiling | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias): dx in x's dtype and memory format, dweight/dbias in the weight's dtype."""
    x, s_n, s_c, s_hw = _as_nc_hw(x)
    channels_last = s_c == 1 and x.shape[1] > 1 and x.dim() == 4
    dy = dy.contiguous(memory_format=torch.channels_last) if channels_last else dy.contiguous()
    if dy.stride() != x.stride():  # e.g. a size-1 dimension makes the layouts ambiguous
        dy = torch.empty_like(x, dtype=dy.dtype).copy_(dy)
    n, c = x.shape[:2]
    hw = x[0, 0].numel()
    tile = tile or plan(c, hw, num_groups, s_c == 1 and c > 1)
    if tile == SMALL:
        return group_norm_small.backward(dy, x, s_n, s_c, s_hw, weight, bias, mean, rstd, num_groups, silu)
    cpg = c // num_groups
    pdb = empty((n, tile.num_chunks, c), torch.float32, x.device)
    pds = empty((n, tile.num_chunks, c), torch.float32, x.device)
    c1 = empty((n, num_groups), torch.float32, x.device)
    c2 = empty((n, num_groups), torch.float32, x.device)
    dweight = empty((c,), weight.dtype, x.device)
    dbias = empty((c,), bias.dtype, x.device)
    dx = empty(None, x.dtype, x.device, like=x)
    grid = (n, cdiv(c, tile.block_c), tile.num_chunks)
    _bwd_partials_kernel[grid](x, dy, mean, rstd, weight, bias, pdb, pds, c, hw, num_groups, cpg, s_n, s_c, s_hw,
                               tile.num_chunks, CHUNK=tile.chunk, BLOCK_C=tile.block_c, BLOCK_HW=tile.block_hw,
                               SILU=silu, num_warps=NUM_WARPS)
    _bwd_group_kernel[(num_groups,)](pdb, pds, weight, dweight, dbias, c1, c2, c, hw, num_groups, cpg,
                                     tile.num_chunks, N=n, BLOCK_K=next_power_of_2(tile.num_chunks),
                                     BLOCK_CPG=next_power_of_2(cpg), num_warps=NUM_WARPS)
    _bwd_dx_kernel[grid](x, dy, dx, mean, rstd, weight, bias, c1, c2, c, hw, num_groups, cpg, s_n, s_c, s_hw,
                         CHUNK=tile.chunk, BLOCK_C=tile.block_c, BLOCK_HW=tile.block_hw, SILU=silu,
                         num_warps=NUM_WARPS)
    return dx, dweight, dbias


# ---------------------------------------------------------------------------------- autograd


class GroupNormSiLUFunction(torch.autograd.Function):
    """Saves x and the fp32 statistics: 8 bytes per (sample, group) on top of the input."""

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups: int, eps: float, silu: bool, tile: Tiling | str | None = None):
        x, _, s_c, _ = _as_nc_hw(x)  # NCHW or channels_last from here on (a copy only for other layouts)
        if tile is None:  # decided once: backward takes the forward's path whatever SMALL_GROUP_MAX is by then
            tile = plan(x.shape[1], x[0, 0].numel(), num_groups, s_c == 1 and x.shape[1] > 1)
        y, mean, rstd = forward(x, weight, bias, num_groups, eps, silu, tile)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.num_groups, ctx.silu, ctx.tile = num_groups, silu, tile
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        dx, dweight, dbias = backward(dy, x, weight, bias, mean, rstd, ctx.num_groups, ctx.silu, ctx.tile)
        return (dx if ctx.needs_input_grad[0] else None, dweight if ctx.needs_input_grad[1] else None,
                dbias if ctx.needs_input_grad[2] else None, None, None, None, None)


def group_norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int, eps: float = 1e-5,
                    silu: bool = True, tile: Tiling | str | None = None) -> torch.Tensor:
    """The fused op through Triton (differentiable in x, weight and bias)."""
    return GroupNormSiLUFunction.apply(x, weight, bias, num_groups, eps, silu, tile)
