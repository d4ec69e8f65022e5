"""The Triton kernels (agfsync/kernels) on the CPU under TRITON_INTERPRET=1 (set in conftest.py),
against float64 references built from the same low-precision inputs. Every buffer a launcher
allocates is filled with NaN first (runtime.poisoned_outputs), so an element a kernel does not
write fails the comparison.

Tolerances, per output dtype (|out - ref| <= atol + rtol |ref|):
- fp32: the kernels accumulate in fp32 over at most a few thousand elements per partial sum;
  measured errors are ~4e-7 relative, so rtol 1e-5 with atol 1e-5 x the output's scale leaves
  a margin of ~20x and still fails on any algebra slip (a missing term is O(1)).
- bf16 / fp16 outputs: computed in fp32, then converted once. The interpreter truncates
  fp32 -> bf16 (a GPU rounds to nearest), so the error can reach one ulp: 2^-7 relative for
  bf16 (7 stored mantissa bits) and 2^-10 for fp16.
- Weight and bias gradients are fp32 sums over N x HW whatever the activation dtype, so they
  get the fp32 tolerance when the weights are fp32.
"""

from __future__ import annotations

import copy
import logging
import os

import pytest
import torch
import torch.nn.functional as F

from agfsync.train.kernels import runtime

pytestmark = pytest.mark.skipif(runtime.triton_unavailable_reason(torch.device("cpu")) is not None,
                                reason="needs triton and TRITON_INTERPRET=1 (conftest sets it)")

RTOL = {torch.float32: 1e-5, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert out.dtype == dtype, f"{what}: dtype {out.dtype}, expected {dtype}"
    assert not out.isnan().any(), f"{what}: {int(out.isnan().sum())} element(s) never written (NaN poison left)"
    scale = max(1.0, float(ref.abs().max()))
    torch.testing.assert_close(out.double(), ref, rtol=RTOL[dtype], atol=1e-5 * scale, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------------- GroupNorm + SiLU

GN_CASES = [
    # (shape, groups, x dtype, weight dtype, channels_last, silu): SD/SDXL channel counts, awkward sizes
    ((1, 96, 3, 3), 32, torch.float32, torch.float32, False, True),  # batch 1, 3 channels per group
    ((1, 96, 3, 3), 32, torch.float32, torch.float32, True, True),  # 96 channels: 1.5 channels_last tiles of 64
    ((2, 320, 5, 7), 32, torch.float32, torch.float32, False, True),  # SD level 1 channels, odd 5x7
    ((2, 320, 5, 7), 32, torch.bfloat16, torch.float32, True, True),  # bf16 autocast activations, fp32 master weights
    ((2, 640, 3, 1), 32, torch.float16, torch.float32, False, True),
    ((1, 960, 1, 3), 32, torch.bfloat16, torch.float32, False, True),  # SDXL up block concat: 30 per group
    ((2, 2560, 1, 1), 32, torch.bfloat16, torch.bfloat16, True, True),  # SDXL 1280+1280 concat, 1x1 spatial, bf16 weights
    ((2, 1280, 2, 2), 32, torch.float32, torch.float32, True, False),  # GroupNorm alone (transformer input norm)
    ((3, 64, 9, 5), 32, torch.float16, torch.float16, True, False),
    ((1, 32, 70, 70), 32, torch.float32, torch.float32, False, True),  # one channel of 4,900 > one 4,096 tile
]


def _gn_inputs(shape, x_dtype, w_dtype, channels_last, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (3.0 + 2.0 * torch.randn(shape, generator=g)).to(x_dtype)  # a non-zero mean, as activations have
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = (1.0 + 0.5 * torch.randn(shape[1], generator=g)).to(w_dtype)
    b = (0.5 * torch.randn(shape[1], generator=g)).to(w_dtype)
    dy = torch.randn(shape, generator=g).to(x_dtype)
    return x, w, b, dy


def _gn_reference(x, w, b, dy, groups, silu, eps=1e-5):
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    from agfsync.train.kernels.group_norm_silu import reference

    y64 = reference(x64, w64, b64, groups, eps, silu)
    y64.backward(dy.double())
    return y64.detach(), x64.grad, w64.grad, b64.grad


def _gn_run(x, w, b, dy, groups, silu, tile=None, eps=1e-5):
    from agfsync.train.kernels.group_norm_silu import group_norm_silu

    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    with runtime.poisoned_outputs():
        y = group_norm_silu(x, w, b, groups, eps, silu, tile)
        y.backward(dy)
    return y.detach(), x.grad, w.grad, b.grad


@pytest.mark.parametrize("path", ["small", "chunked"])
@pytest.mark.parametrize("shape,groups,x_dtype,w_dtype,channels_last,silu", GN_CASES)
def test_group_norm_silu_forward_and_gradients_match_float64(shape, groups, x_dtype, w_dtype, channels_last, silu,
                                                             path, monkeypatch):
    """Both paths on every case: one program per group (group_norm_small) and the chunked kernels."""
    from agfsync.train.kernels import group_norm_silu

    monkeypatch.setattr(group_norm_silu, "SMALL_GROUP_MAX", 1 << 30 if path == "small" else 0)
    x, w, b, dy = _gn_inputs(shape, x_dtype, w_dtype, channels_last)
    y, dx, dw, db = _gn_run(x, w, b, dy, groups, silu)
    y64, dx64, dw64, db64 = _gn_reference(x, w, b, dy, groups, silu)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)
    assert_close(y, y64, x_dtype, "y")
    assert_close(dx, dx64, x_dtype, "dx")
    assert_close(dw, dw64, w_dtype, "dweight")
    assert_close(db, db64, w_dtype, "dbias")


@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_silu_chunked_tiles_with_ragged_edges(channels_last):
    """Small tiles force several programs per channel, several loop steps per program and masked
    edges in both C and HW (45 = 2 chunks of 24 = 3 blocks of 8, the last ones partial)."""
    from agfsync.train.kernels.group_norm_silu import Tiling

    x, w, b, dy = _gn_inputs((2, 96, 5, 9), torch.float32, torch.float32, channels_last, seed=1)
    y, dx, dw, db = _gn_run(x, w, b, dy, 32, True, tile=Tiling(block_c=64, block_hw=8, chunk=24, num_chunks=2))
    for out, ref, name in zip((y, dx, dw, db), _gn_reference(x, w, b, dy, 32, True), ("y", "dx", "dw", "db")):
        assert_close(out, ref, torch.float32, name)


def test_group_norm_path_follows_the_measured_threshold():
    """SMALL_GROUP_MAX = 131,072 elements per group (the H200 probe): SD1.5's [2, 320, 64, 64] (40,960
    per group) and SDXL's [2, 640, 64, 64] (81,920) take one program per group; SDXL's [2, 320, 128, 128]
    (163,840) the chunked kernels."""
    from agfsync.train.kernels.group_norm_silu import SMALL, SMALL_GROUP_MAX, Tiling, plan

    assert SMALL_GROUP_MAX == 131_072
    assert plan(320, 64 * 64, 32, False) == SMALL and plan(640, 64 * 64, 32, True) == SMALL
    assert plan(32, 131_072, 32, False) == SMALL and isinstance(plan(32, 131_073, 32, False), Tiling)
    assert isinstance(plan(320, 128 * 128, 32, False), Tiling)


@pytest.mark.parametrize("small_group_max", [1 << 30, 0])
def test_group_norm_silu_takes_a_strided_input(small_group_max, monkeypatch):
    """Neither NCHW nor channels_last (every other column): laid out once, and the gradient reaches
    the strided input with its shape, on both paths."""
    from agfsync.train.kernels import group_norm_silu

    monkeypatch.setattr(group_norm_silu, "SMALL_GROUP_MAX", small_group_max)
    x, w, b, dy = _gn_inputs((2, 64, 5, 12), torch.float32, torch.float32, False, seed=4)
    x, dy = x[..., ::2], dy[..., ::2]
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    y, dx, dw, db = _gn_run(x, w, b, dy, 32, True)
    assert dx.shape == x.shape
    for out, ref, name in zip((y, dx, dw, db), _gn_reference(x, w, b, dy, 32, True), ("y", "dx", "dw", "db")):
        assert_close(out, ref, torch.float32, name)


@pytest.mark.parametrize("small_group_max", [1 << 30, 0])
def test_group_norm_statistics_survive_a_large_mean(small_group_max, monkeypatch):
    """mean 1000, std 1: a naive E[x^2] - E[x]^2 in fp32 loses the variance to cancellation
    (1e6 against ulp(1e6) = 0.06); the per-channel shifted sums keep it (both paths)."""
    from agfsync.train.kernels import group_norm_silu

    monkeypatch.setattr(group_norm_silu, "SMALL_GROUP_MAX", small_group_max)
    x, w, b, dy = _gn_inputs((2, 64, 4, 4), torch.float32, torch.float32, False, seed=2)
    x = (x - 3.0) / 2.0 + 1000.0
    y, dx, _, _ = _gn_run(x, w, b, dy, 32, True)
    y64, dx64, _, _ = _gn_reference(x, w, b, dy, 32, True)
    # x - mean is formed in fp32 around 1000, where one ulp is 6.1e-5; the output scales that by
    # |w| rstd (rstd ~ 1). A few ulps x max|w| bounds it; the naive formula misses by ~1e-2.
    atol = 8 * 2.0**-14 * float(w.abs().max())
    torch.testing.assert_close(y.double(), y64, rtol=0, atol=atol)
    torch.testing.assert_close(dx.double(), dx64, rtol=0, atol=atol)


@pytest.mark.parametrize("small_group_max", [1 << 30, 0])
def test_group_norm_silu_is_bitwise_deterministic(small_group_max, monkeypatch):
    from agfsync.train.kernels import group_norm_silu

    monkeypatch.setattr(group_norm_silu, "SMALL_GROUP_MAX", small_group_max)
    x, w, b, dy = _gn_inputs((2, 320, 3, 5), torch.bfloat16, torch.float32, True, seed=3)
    first, second = _gn_run(x, w, b, dy, 32, True), _gn_run(x, w, b, dy, 32, True)
    assert all(torch.equal(a, c) for a, c in zip(first, second))


def test_group_norm_silu_rejects_bad_shapes_by_name():
    from agfsync.train.kernels.group_norm_silu import group_norm_silu

    x = torch.randn(1, 48, 2, 2)
    with pytest.raises(ValueError, match=r"^group_norm_silu: 48 channels are not divisible into 32 groups$"):
        group_norm_silu(x, torch.ones(48), torch.zeros(48), 32)
    with pytest.raises(ValueError, match=r"^group_norm_silu: bias must be a contiguous \(64,\) tensor, got \(32,\)$"):
        group_norm_silu(torch.randn(1, 64, 2, 2), torch.ones(64), torch.zeros(32), 32)


# ---------------------------------------------------------------------------------- Diffusion-DPO loss


def _dpo_inputs(pairs, latent, pred_dtype, ref_dtype, margin, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (pairs, *latent)
    target_w, target_l = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    pred = torch.cat([target_w, target_l]) + torch.randn((2 * pairs, *latent), generator=g)
    ref = pred + margin * torch.randn(pred.shape, generator=g)  # how far the policy has moved from the reference
    return pred.to(pred_dtype), ref.to(ref_dtype), target_w, target_l


DPO_CASES = [
    # (pairs, latent C x H x W, pred dtype, ref dtype, beta, ref margin, shared target)
    (1, (4, 5, 3), torch.float32, torch.float32, 5000.0, 1e-3, False),  # batch 1, 60 elements: one masked block
    (3, (4, 33, 17), torch.float32, torch.float32, 5000.0, 1e-3, True),  # 2,244 elements: 3 loop steps, last ragged
    (2, (4, 9, 7), torch.bfloat16, torch.bfloat16, 5000.0, 1e-2, False),  # the trainer's autocast dtypes
    (2, (4, 8, 8), torch.float32, torch.float32, 5000.0, 0.3, False),  # |inside| in the hundreds: saturated pairs
]


@pytest.mark.parametrize("pairs,latent,pred_dtype,ref_dtype,beta,margin,shared_target", DPO_CASES)
def test_dpo_loss_forward_metrics_and_gradient_match_float64(pairs, latent, pred_dtype, ref_dtype, beta, margin,
                                                             shared_target):
    from agfsync.train.kernels.dpo_loss import dpo_loss, reference

    pred, ref, target_w, target_l = _dpo_inputs(pairs, latent, pred_dtype, ref_dtype, margin)
    if shared_target:  # epsilon prediction: winner and loser share one noise draw, so one target tensor
        target_l = target_w
    pred = pred.requires_grad_()
    with runtime.poisoned_outputs():
        loss, metrics = dpo_loss(pred, ref, target_w, target_l, beta)
        loss.backward()
    p64 = pred.detach().double().requires_grad_()
    loss64, metrics64 = reference(p64, ref.double(), target_w.double(), target_l.double(), beta)
    loss64.backward()
    # Each MSE is an fp32 sum (relative error <= 1e-6); inside = 0.5 beta x a sum of four MSEs,
    # so its absolute error is bounded by 0.5 beta 4e-6 max(mse). Loss and margins inherit it.
    mse_max = max(float(metrics64[k]) for k in ("mse_w", "mse_l", "ref_mse_w", "ref_mse_l"))
    tol_inside = 0.5 * beta * 4e-6 * mse_max
    for key in ("mse_w", "mse_l", "ref_mse_w", "ref_mse_l"):
        assert float(metrics[key]) == pytest.approx(float(metrics64[key]), rel=1e-6), key
    for key in ("loss", "reward_margin"):
        assert float(metrics[key]) == pytest.approx(float(metrics64[key]), abs=tol_inside, rel=1e-6), key
    assert float(metrics["implicit_acc"]) == float(metrics64["implicit_acc"])
    assert float(loss.detach()) == float(metrics["loss"])
    # d loss / d pred = k 2 (pred - target) / M with k ~ sigmoid(-inside): d log sigmoid <= d inside,
    # so the gradient's relative error is that of inside; bf16 adds the final conversion (RTOL).
    rtol = 1e-5 + tol_inside + (RTOL[pred_dtype] if pred_dtype != torch.float32 else 0.0)
    assert pred.grad.dtype == pred_dtype and not pred.grad.isnan().any()
    torch.testing.assert_close(pred.grad.double(), p64.grad, rtol=rtol, atol=1e-7 * float(p64.grad.abs().max()))


def test_dpo_loss_saturated_pairs_stay_finite():
    """inside = +-5000 (beta 5000 runs meet such pairs early): exp must not overflow."""
    from agfsync.train.kernels.dpo_loss import dpo_loss

    target = torch.zeros(2, 4, 2, 2)
    good = torch.cat([torch.zeros(2, 4, 2, 2), torch.ones(2, 4, 2, 2)])  # winners perfect, losers off by 1
    bad = torch.cat([torch.ones(2, 4, 2, 2), torch.zeros(2, 4, 2, 2)])  # the reverse
    for pred, ref, want_margin in ((good, bad, 5000.0), (bad, good, -5000.0)):  # inside = -0.5 beta (-1 - 1) = 5000
        pred = pred.clone().requires_grad_()
        loss, metrics = dpo_loss(pred, ref, target, target, 5000.0)
        loss.backward()
        assert float(metrics["reward_margin"]) == want_margin
        assert float(metrics["loss"]) == pytest.approx(max(0.0, -want_margin), abs=1e-6)
        assert torch.isfinite(pred.grad).all()
    # Saturated the wrong way: d loss / d mse_w = 0.5 beta / B = 1250, d mse_w / d pred = 2 (pred - t) / M = 2 / 16;
    # the losers are already perfect, so their gradient is 0.
    assert torch.equal(pred.grad[:2], torch.full((2, 4, 2, 2), 1250.0 * 2 / 16))
    assert torch.equal(pred.grad[2:], torch.zeros(2, 4, 2, 2))


def test_dpo_loss_rejects_mismatched_shapes_by_name():
    from agfsync.train.kernels.dpo_loss import dpo_loss

    t = torch.zeros(2, 4, 3, 3)
    with pytest.raises(ValueError, match=r"^dpo_loss: ref must have shape \(4, 4, 3, 3\) \(winners then losers\), "
                                         r"got \(2, 4, 3, 3\)$"):
        dpo_loss(torch.zeros(4, 4, 3, 3), t, t, t, 1.0)


# ---------------------------------------------------------------------------------- the UNet swap


def _tiny_unet(family: str):
    """The demo's tiny UNets (agfsync/demo/tiny_models.py); SDXL's with its added conditioning inputs."""
    from agfsync.demo.tiny_models import sd1_unet, sdxl_unet

    torch.manual_seed(0)
    if family == "sd1":
        return sd1_unet(), {}
    g = torch.Generator().manual_seed(5)
    return sdxl_unet(), {"added_cond_kwargs": {"text_embeds": torch.randn(2, 32, generator=g),
                                               "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)}}


def _dpo_step_inputs(unet, extra):
    g = torch.Generator().manual_seed(6)
    pairs = 1  # the interpreter's cost grows with the batch: one pair keeps this test near 20 s
    noisy = torch.randn(2 * pairs, 4, 8, 8, generator=g)
    t = torch.tensor([700, 700])
    context = torch.randn(2 * pairs, 7, unet.config.cross_attention_dim, generator=g)
    target = torch.randn(pairs, 4, 8, 8, generator=g)
    return noisy, t, context, target


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_swapped_unet_matches_stock_forward_and_dpo_step(family):
    """Stock fp32, kernels fp32 and stock float64 UNets take the same DPO step (policy fwd+bwd,
    reference fwd, SGD update; SDXL with gradient checkpointing). The kernel model's output, gradients and new weights must be as
    close to float64 as stock fp32's are, relative to their global scale (per-element relative
    errors are meaningless for gradients that cancel to ~0, such as biases right before a
    GroupNorm)."""
    from agfsync.train.loss import diffusion_dpo_loss
    from agfsync.train.kernels.dpo_loss import dpo_loss
    from agfsync.train.kernels.modules import FusedGroupNorm, PassThroughSiLU, swap_group_norm_silu

    stock, extra = _tiny_unet(family)
    before = {k: v.clone() for k, v in stock.state_dict().items()}
    fused, ref_model = copy.deepcopy(stock), copy.deepcopy(stock).requires_grad_(False)
    counts = swap_group_norm_silu(fused)
    swap_group_norm_silu(ref_model)
    # every ResNet block's two norms + conv_norm_out; the transformer input norms without SiLU
    num_resnets = sum(type(m).__name__ == "ResnetBlock2D" for m in stock.modules())
    num_transformers = sum(type(m).__name__ == "Transformer2DModel" for m in stock.modules())
    assert counts == {"group_norm_silu": 2 * num_resnets + 1, "group_norm": num_transformers}
    assert not [m for m in fused.modules() if type(m) is torch.nn.GroupNorm]
    assert all(type(m.nonlinearity) is PassThroughSiLU for m in fused.modules() if type(m).__name__ == "ResnetBlock2D")
    assert type(fused.time_embedding.act) is torch.nn.SiLU  # a SiLU after a Linear stays as it was
    assert all(isinstance(m, FusedGroupNorm) for m in (fused.conv_norm_out,))
    after = fused.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)

    exact = copy.deepcopy(stock).double()
    if family == "sdxl":  # recomputation in backward must re-run the fused ops (and re-mark their outputs)
        for model in (stock, fused, exact):
            model.enable_gradient_checkpointing()
    noisy, t, context, target = _dpo_step_inputs(stock, extra)

    def step(model, reference, fused_loss, dtype):
        def run(m):
            kw = {k: {kk: vv.to(dtype) for kk, vv in v.items()} for k, v in extra.items()}
            return m(noisy.to(dtype), t, encoder_hidden_states=context.to(dtype), **kw).sample

        pred = run(model)
        with torch.no_grad():
            ref = run(reference)
        if fused_loss:
            loss, _ = dpo_loss(pred, ref, target, target, 50.0)
        else:
            loss, _ = diffusion_dpo_loss(pred[:1], pred[1:], ref[:1], ref[1:], target.to(dtype), target.to(dtype), 50.0)
        loss.backward()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        opt.step()
        return pred.detach(), float(loss.detach()), {n: p.grad for n, p in model.named_parameters()}, model.state_dict()

    with runtime.poisoned_outputs():
        out_f, loss_f, grads_f, weights_f = step(fused, ref_model, True, torch.float32)
    out_s, loss_s, grads_s, weights_s = step(stock, copy.deepcopy(stock).requires_grad_(False), False, torch.float32)
    out_e, loss_e, grads_e, weights_e = step(exact, copy.deepcopy(exact).requires_grad_(False), False, torch.float64)

    def worst(a, b):  # max |a - b| relative to b's global scale
        return max(float((a[k].double() - b[k]).abs().max()) for k in b) / max(float(b[k].abs().max()) for k in b)

    err = {"output": (worst({"o": out_f}, {"o": out_e}), worst({"o": out_s}, {"o": out_e})),
           "grads": (worst(grads_f, grads_e), worst(grads_s, grads_e)),
           "weights": (worst(weights_f, weights_e), worst(weights_s, weights_e))}
    for what, (kernel, stock_fp32) in err.items():
        # stock fp32 is the yardstick (measured ~1e-6 for gradients: rounding through ~25 layers);
        # dropping one term of the GroupNorm backward gives 0.4
        assert kernel <= 4 * stock_fp32 + 1e-6, f"{what}: kernels {kernel:.2e}, stock fp32 {stock_fp32:.2e}"
    assert loss_f == pytest.approx(loss_e, rel=1e-5) and loss_s == pytest.approx(loss_e, rel=1e-5)
    assert any(not torch.equal(weights_f[k], before[k]) for k in before)  # the step did move the weights


def test_swapped_module_without_triton_runs_the_torch_reference_and_says_so(monkeypatch, caplog):
    from agfsync.train.kernels import modules

    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(modules, "_RUNNABLE", {})
    norm = torch.nn.GroupNorm(32, 64)
    fused = modules.FusedGroupNorm.replacing(norm, silu=True)
    x = torch.randn(2, 64, 3, 3)
    with caplog.at_level(logging.WARNING, logger="agfsync.train.kernels.modules"):
        y = fused(x)
    assert torch.equal(y, F.silu(norm(x)))
    assert caplog.messages == ["kernels: fused GroupNorm falls back to the torch reference on cpu: the device is "
                               "cpu and TRITON_INTERPRET is not set (Triton compiles for GPUs only)"]


def test_kernels_setting_resolution_and_log_lines(monkeypatch, caplog):
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="agfsync.train.kernels.runtime"):
        assert runtime.use_triton("triton", cpu) is True  # the interpreter is on (conftest)
        assert runtime.use_triton("auto", cpu) is False  # never the slow interpreter unless asked
        assert runtime.use_triton("torch", cpu) is False
        monkeypatch.delenv("TRITON_INTERPRET")
        assert runtime.use_triton("triton", cpu) is False
        assert runtime.use_triton("auto", torch.device("cuda")) is False  # measured slower end to end (H200)
    assert caplog.messages == [
        "kernels: triton (train.kernels on cpu, numpy interpreter: slow, for tests)",
        "kernels: torch (train.kernels: auto on cpu; Triton compiles for GPUs only)",
        "kernels: torch (train.kernels)",
        "kernels: triton was requested (train.kernels) but cannot run here: the device is cpu and TRITON_INTERPRET "
        "is not set (Triton compiles for GPUs only); the torch reference runs instead",
        "kernels: torch (train.kernels: auto on cuda; the Triton kernels made the SDXL DPO step slower on an H200, "
        "bench/measurements/gpu_probe_h200.json; train.kernels: triton turns them on)",
    ]
    with pytest.raises(ValueError, match=r"^train.kernels: unknown kernels setting 'cuda' \(expected one of auto, "
                                         r"triton, torch\)$"):
        runtime.use_triton("cuda", cpu)


# ---------------------------------------------------------------------------------- in the trainer


def test_trainer_with_triton_kernels_matches_torch_kernels(demo_config_module, tiny_models, tmp_path):
    """train.kernels: triton (interpreter) against torch, two optimizer steps of one pair each in the real trainer
    (DeepSpeed ZeRO-2, AdamW, 1 process, in this one): same losses, same weights up to fp32 rounding."""
    import json

    from train_helpers import metrics, toy_cache, toy_config, train_in_process, unet_weights

    cache = toy_cache(tmp_path / "cache", num_pairs=4, chunk_size=4)
    runs = {}
    for kernels in ("torch", "triton"):
        cfg = toy_config(demo_config_module, tiny_models, kernels=kernels, optimizer="adamw", gpus=1)
        cfg["models"]["sd15"]["train"].update({"steps": 2, "global_batch": 1, "micro_batch": 1})
        result = train_in_process(cfg, cache, tmp_path / kernels / "out", tmp_path / kernels / "ckpt")
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads((tmp_path / kernels / "out" / "summary.json").read_text())["kernels"] == kernels
        runs[kernels] = (metrics(tmp_path / kernels / "out" / "metrics.jsonl"), unet_weights(tmp_path / kernels / "out"),
                         result.stderr)
    (steps_t, weights_t, _), (steps_k, weights_k, _) = runs["torch"], runs["triton"]
    lines = {k: [line.split(" agfsync.train.", 1)[-1] for line in log.splitlines() if " agfsync.train.kernels." in line]
             for k, (_, _, log) in runs.items()}
    check = lines["triton"].pop(1)
    assert check.startswith("kernels.self_check: kernels: start-up check on cpu passed (18 checks, worst at "), check
    # policy and reference UNets each: 8 ResNet blocks x 2 norms + conv_norm_out, 4 transformer input norms
    swapped = "kernels.modules: kernels: swapped 17 GroupNorm+SiLU and 4 GroupNorm modules for the fused Triton op"
    assert lines["triton"] == ["kernels.runtime: kernels: triton (train.kernels on cpu, numpy interpreter: slow, "
                               "for tests)", swapped, swapped], lines["triton"]
    assert lines["torch"] == ["kernels.runtime: kernels: torch (train.kernels)"], lines["torch"]
    assert len(steps_t) == len(steps_k) == 2
    for a, b in zip(steps_t, steps_k):
        for key in ("loss", "mse_w", "mse_l", "ref_mse_w", "ref_mse_l"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    base = unet_weights(tiny_models / "sd1")
    moved = sum(float((weights_t[k] - base[k]).norm() ** 2) for k in base) ** 0.5
    apart = sum(float((weights_k[k] - weights_t[k]).norm() ** 2) for k in base) ** 0.5
    # AdamW moves every weight by ~lr per step whatever the gradient's size, so elements whose
    # gradient is pure rounding noise may step either way; in norm that stays far below the update.
    assert moved > 0 and apart < 0.05 * moved, (apart, moved)


# ---------------------------------------------------------------------------------- bench/kernels.py


def _bench_module():
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_kernels", REPO / "bench" / "kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("arch,silu_calls,plain_calls", [("sd15", 45, 16), ("sdxl", 35, 11)])
def test_benchmark_shapes_are_the_real_unets_group_norm_calls(arch, silu_calls, plain_calls):
    """Found on the meta device. SD1.5: 22 ResNet blocks x 2 + conv_norm_out, 16 transformers;
    SDXL: 17 x 2 + 1, 11 transformers (docs/method.md, Architectures)."""
    rows = _bench_module().group_norm_rows(arch)
    assert sum(r["count"] for r in rows if r["silu"]) == silu_calls
    assert sum(r["count"] for r in rows if not r["silu"]) == plain_calls
    latent = {"sd15": 64, "sdxl": 128}[arch]
    assert {"shape": [2, 320, latent, latent], "groups": 32, "eps": 1e-5, "silu": True,
            "count": 8} in rows  # the first and last ResNet blocks plus conv_norm_out


def test_benchmark_smoke_run_checks_every_row(tmp_path, repo):
    import json
    import subprocess
    import sys

    out = tmp_path / "kernels.json"
    result = subprocess.run([sys.executable, str(repo / "bench" / "kernels.py"), "--smoke", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert [r["silu"] for r in data["group_norm"]] == [True, False]
    assert all(c["within_tolerance"] for r in data["group_norm"] for c in r["check"].values())
    assert data["summary"]["sd15"]["all_checks_pass"] is True
    assert data["dpo_loss"][0]["loss_abs_error"] < 1e-3
    assert {"stock_dpo_step_ms", "kernels_dpo_step_ms", "dpo_step_speedup"} <= set(data["end_to_end"][0])
    assert "bitsandbytes" not in result.stderr or "from 'kernels'" not in result.stderr  # no shadowing


def test_every_kernel_compiles_for_hopper_without_spills(tmp_path):
    """The interpreter runs kernels as numpy and accepts code the compiler rejects. This compiles
    every specialization a training step on the real SD1.5/SDXL shapes launches (both layouts, with
    and without SiLU, the DPO loss on 64x64 and 128x128 latents) to an sm_90 cubin with Triton's own
    ptxas. No GPU is needed. It also checks that no kernel spills registers to local memory."""
    import json
    import subprocess
    import sys

    out = tmp_path / "compile.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "agfsync.train.kernels.compile_check", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["target"] == "sm_90"
    kernels = {r["kernel"] for r in data["kernels"]}
    assert kernels == {"_stats_kernel", "_group_stats_kernel", "_apply_kernel", "_bwd_partials_kernel",
                       "_bwd_group_kernel", "_bwd_dx_kernel", "_forward_kernel", "_backward_kernel",
                       "_fwd_kernel", "_bwd_kernel"}  # the last two: group_norm_small, one program per group
    for name in ("_apply_kernel", "_fwd_kernel"):
        assert {r["constexprs"].get("SILU") for r in data["kernels"] if r["kernel"] == name} == {True, False}
    assert [r for r in data["kernels"] if r["local"] > 0 or r["reg"] > 255] == []


def test_start_up_check_passes_here_and_stops_a_run_whose_kernels_are_wrong(monkeypatch):
    from agfsync.train.kernels import group_norm_silu, self_check

    results = self_check.check_kernels(torch.device("cpu"))
    assert len(results) == 18 and max(results.values()) <= 1.0
    right = group_norm_silu.group_norm_silu
    monkeypatch.setattr(group_norm_silu, "group_norm_silu", lambda *a, **k: right(*a, **k) * 1.01)  # 1% off
    with pytest.raises(self_check.KernelCheckError) as err:
        self_check.check_kernels(torch.device("cpu"))
    message = str(err.value)
    assert message.startswith("kernels: the Triton kernels disagree with the torch reference on cpu: "
                              "group_norm_silu float32 nchw y at ")
    assert message.endswith(". Set train.kernels: torch to train without them, and please report this.")
    assert "dpo_loss" not in message  # only what is wrong is named
