"""GroupNorm (+ SiLU) in one launch per direction, for groups small enough for one program.

The chunked kernels of group_norm_silu.py take three launches each way, which spreads a
large group over many programs. On the H200 (bench/measurements/gpu_h200.json) most of the
UNets' GroupNorm calls are small (SD1.5's deepest levels hold 2,560 elements per group), and
each Triton launch costs tens of microseconds of host time, more than the GPU needs for the
whole op. So for a small group the whole op is one program:

- forward, one program per (n, g): pass 1 sums the group (per channel, shifted by the
  channel's first element, combined with Chan's formula as in the chunked kernels); pass 2
  reads the group again (from L2) and writes y. One launch.
- backward, one program per g, looping over the N samples in order: pass 1 sums dz and
  dz * xhat per channel, pass 2 writes dx; dw and db accumulate over the samples in the
  program. One launch, no atomics: bitwise deterministic.

The statistics (mean, rstd as fp32 [N, G]) are the chunked kernels', so either backward
can follow either forward. Which path runs is decided in group_norm_silu (`SMALL_GROUP_MAX`).
HW and N are compile-time constants (the interpreter cannot loop over a runtime scalar, and
a training run's shapes never change).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from agfsync.train.kernels.runtime import empty, next_power_of_2

TILE_ELEMENTS = 4096  # elements per loop step of one program: 16 per thread at 8 warps
NUM_WARPS = 8


@triton.jit
def _tile(xp, c, c_mask, start, stride_c, stride_hw, HW: tl.constexpr, BLOCK_HW: tl.constexpr):
    hw = start + tl.arange(0, BLOCK_HW)
    mask = c_mask[:, None] & (hw < HW)[None, :]
    return xp + c[:, None] * stride_c + hw[None, :] * stride_hw, mask


@triton.jit
def _program_group(G, CPG, BLOCK_CPG: tl.constexpr):
    """The (n, g) of a program over N x G, and its group's channels with their mask."""
    pid = tl.program_id(0)
    n = pid // G
    g = pid % G
    j = tl.arange(0, BLOCK_CPG)
    return pid, n, g, g * CPG + j, j < CPG


@triton.jit
def _group_moments(shift, s1, s2, c_mask, HW, CPG, eps):
    """A group's mean and 1/std (biased variance) from per-channel sums shifted by each channel's first
    value, s1 = sum(x - shift) and s2 = sum((x - shift)^2) over HW: Chan's formula across the channels."""
    mean_c = shift + s1 / HW
    m2_c = tl.where(c_mask, s2 - s1 * s1 / HW, 0.0)
    mean = tl.sum(tl.where(c_mask, mean_c, 0.0), axis=0) / CPG
    dev = tl.where(c_mask, mean_c - mean, 0.0)
    var = tl.maximum((tl.sum(m2_c, axis=0) + HW * tl.sum(dev * dev, axis=0)) / (CPG * HW), 0.0)
    return mean, 1.0 / tl.sqrt(var + eps)


@triton.jit
def _fwd_kernel(X, Y, W, B, Mean, Rstd, G, CPG, stride_n, stride_c, stride_hw, eps,
                HW: tl.constexpr, BLOCK_CPG: tl.constexpr, BLOCK_HW: tl.constexpr, SILU: tl.constexpr):
    """One (n, g): statistics, then y = silu(x * scale_c + shift_c). Y has X's strides."""
    pid, n, g, c, c_mask = _program_group(G, CPG, BLOCK_CPG)
    offset = n.to(tl.int64) * stride_n
    xp = X + offset
    shift = tl.load(xp + c * stride_c, mask=c_mask, other=0.0).to(tl.float32)
    acc1 = tl.zeros([BLOCK_CPG, BLOCK_HW], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_CPG, BLOCK_HW], dtype=tl.float32)
    for start in range(0, HW, BLOCK_HW):
        ptr, mask = _tile(xp, c, c_mask, start, stride_c, stride_hw, HW, BLOCK_HW)
        d = tl.where(mask, tl.load(ptr, mask=mask, other=0.0).to(tl.float32) - shift[:, None], 0.0)
        acc1 += d
        acc2 += d * d
    mean, rstd = _group_moments(shift, tl.sum(acc1, axis=1), tl.sum(acc2, axis=1), c_mask, HW, CPG, eps)
    tl.store(Mean + pid, mean)
    tl.store(Rstd + pid, rstd)
    w = tl.load(W + c, mask=c_mask, other=0.0).to(tl.float32)
    b = tl.load(B + c, mask=c_mask, other=0.0).to(tl.float32)
    scale = (w * rstd)[:, None]
    bias = (b - mean * w * rstd)[:, None]
    yp = Y + offset
    for start in range(0, HW, BLOCK_HW):
        ptr, mask = _tile(xp, c, c_mask, start, stride_c, stride_hw, HW, BLOCK_HW)
        z = tl.load(ptr, mask=mask, other=0.0).to(tl.float32) * scale + bias
        if SILU:
            z = z * tl.sigmoid(z)
        out, _ = _tile(yp, c, c_mask, start, stride_c, stride_hw, HW, BLOCK_HW)
        tl.store(out, z.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _dz(x, dy, mean, rstd, w, b, SILU: tl.constexpr):
    """xhat and dz = dL/d(xhat * w + b): SiLU'(z) = s (1 + z (1 - s)) with s = sigmoid(z)."""
    xhat = (x - mean) * rstd
    if SILU:
        z = xhat * w + b
        s = tl.sigmoid(z)
        dz = dy * s * (1.0 + z * (1.0 - s))
    else:
        dz = dy
    return xhat, dz


@triton.jit
def _xhat_dz(xp, dyp, c, c_mask, start, stride_c, stride_hw, mean, rstd, w, b, HW: tl.constexpr,
             BLOCK_HW: tl.constexpr, SILU: tl.constexpr):
    """One tile of x and dy (same strides) -> xhat, dz and the tile's mask."""
    ptr, mask = _tile(xp, c, c_mask, start, stride_c, stride_hw, HW, BLOCK_HW)
    x = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    gptr, _ = _tile(dyp, c, c_mask, start, stride_c, stride_hw, HW, BLOCK_HW)
    dy = tl.load(gptr, mask=mask, other=0.0).to(tl.float32)
    xhat, dz = _dz(x, dy, mean, rstd, w, b, SILU)
    return xhat, dz, mask


@triton.jit
def _bwd_kernel(X, DY, DX, W, B, Mean, Rstd, DW, DB, G, CPG, stride_n, stride_c, stride_hw,
                N: tl.constexpr, HW: tl.constexpr, BLOCK_CPG: tl.constexpr, BLOCK_HW: tl.constexpr,
                SILU: tl.constexpr):
    """One g, samples in order: dx = rstd (dz w - c2 - xhat c1), c1 = mean(dz w xhat), c2 = mean(dz w);
    dw_c = sum(dz xhat), db_c = sum(dz) over samples and pixels. DY and DX have X's strides."""
    g = tl.program_id(0)
    j = tl.arange(0, BLOCK_CPG)
    c = g * CPG + j
    c_mask = j < CPG
    w1 = tl.load(W + c, mask=c_mask, other=0.0).to(tl.float32)
    b1 = tl.load(B + c, mask=c_mask, other=0.0).to(tl.float32)
    w = w1[:, None]
    b = b1[:, None]
    dw = tl.zeros([BLOCK_CPG], dtype=tl.float32)
    db = tl.zeros([BLOCK_CPG], dtype=tl.float32)
    xp = X
    dyp = DY
    dxp = DX
    for n in range(N):
        mean = tl.load(Mean + n * G + g)
        rstd = tl.load(Rstd + n * G + g)
        acc_db = tl.zeros([BLOCK_CPG, BLOCK_HW], dtype=tl.float32)
        acc_ds = tl.zeros([BLOCK_CPG, BLOCK_HW], dtype=tl.float32)
        for start in range(0, HW, BLOCK_HW):
            xhat, dz, mask = _xhat_dz(xp, dyp, c, c_mask, start, stride_c, stride_hw, mean, rstd, w, b, HW, BLOCK_HW,
                                      SILU)
            dz = tl.where(mask, dz, 0.0)
            acc_db += dz
            acc_ds += dz * xhat
        db_n = tl.sum(acc_db, axis=1)
        ds_n = tl.sum(acc_ds, axis=1)
        db += db_n
        dw += ds_n
        c1 = tl.sum(ds_n * w1, axis=0) / (CPG * HW)
        c2 = tl.sum(db_n * w1, axis=0) / (CPG * HW)
        for start in range(0, HW, BLOCK_HW):
            xhat, dz, mask = _xhat_dz(xp, dyp, c, c_mask, start, stride_c, stride_hw, mean, rstd, w, b, HW, BLOCK_HW,
                                      SILU)
            optr, _ = _tile(dxp, c, c_mask, start, stride_c, stride_hw, HW, BLOCK_HW)
            tl.store(optr, (rstd * (dz * w - c2 - xhat * c1)).to(DX.dtype.element_ty), mask=mask)
        xp += stride_n
        dyp += stride_n
        dxp += stride_n
    tl.store(DW + c, dw.to(DW.dtype.element_ty), mask=c_mask)
    tl.store(DB + c, db.to(DB.dtype.element_ty), mask=c_mask)


def _blocks(cpg: int, hw: int) -> tuple[int, int]:
    block_cpg = next_power_of_2(cpg)
    block_hw = max(1, min(next_power_of_2(hw), TILE_ELEMENTS // block_cpg))
    return block_cpg, block_hw


def forward(x, s_n, s_c, s_hw, weight, bias, num_groups: int, eps: float, silu: bool):
    """x as group_norm_silu._as_nc_hw returns it; (y, mean_NG, rstd_NG) as the chunked forward's."""
    n, c = x.shape[:2]
    hw = x[0, 0].numel()
    cpg = c // num_groups
    block_cpg, block_hw = _blocks(cpg, hw)
    mean = empty((n, num_groups), torch.float32, x.device)
    rstd = empty((n, num_groups), torch.float32, x.device)
    y = empty(None, x.dtype, x.device, like=x)
    _fwd_kernel[(n * num_groups,)](x, y, weight, bias, mean, rstd, num_groups, cpg, s_n, s_c, s_hw, eps, HW=hw,
                                   BLOCK_CPG=block_cpg, BLOCK_HW=block_hw, SILU=silu, num_warps=NUM_WARPS)
    return y, mean, rstd


def backward(dy, x, s_n, s_c, s_hw, weight, bias, mean, rstd, num_groups: int, silu: bool):
    """dy with x's strides; (dx, dweight, dbias) as the chunked backward's."""
    n, c = x.shape[:2]
    hw = x[0, 0].numel()
    cpg = c // num_groups
    block_cpg, block_hw = _blocks(cpg, hw)
    dweight = empty((c,), weight.dtype, x.device)
    dbias = empty((c,), bias.dtype, x.device)
    dx = empty(None, x.dtype, x.device, like=x)
    _bwd_kernel[(num_groups,)](x, dy, dx, weight, bias, mean, rstd, dweight, dbias, num_groups, cpg, s_n, s_c, s_hw,
                               N=n, HW=hw, BLOCK_CPG=block_cpg, BLOCK_HW=block_hw, SILU=silu, num_warps=NUM_WARPS)
    return dx, dweight, dbias
