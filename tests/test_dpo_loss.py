"""Diffusion-DPO loss, lr schedule and data order: exact numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agfsync.train.loss import authors_dpo_loss, diffusion_dpo_loss, prediction_target
from agfsync.train.engine import lr_factor
from agfsync.train.data import batch_indices


def t(*values):
    return torch.tensor(values, dtype=torch.float64).reshape(len(values), 1, 1, 1)


def test_hand_computed_single_pair():
    # mse_w = (1-0)^2 = 1, ref_w = (2-0)^2 = 4, mse_l = 1, ref_l = 0
    # inside = -0.5 * 0.25 * ((1 - 4) - (1 - 0)) = 0.5 ; loss = log(1 + e^-0.5)
    loss, m = diffusion_dpo_loss(t(1.0), t(1.0), t(2.0), t(0.0), t(0.0), t(0.0), beta=0.25)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-12)  # 0.474077...
    assert float(loss) == pytest.approx(0.4740769841801067, abs=1e-12)
    assert (float(m["implicit_acc"]), float(m["reward_margin"])) == (1.0, pytest.approx(0.5))
    assert (float(m["mse_w"]), float(m["ref_mse_w"]), float(m["mse_l"]), float(m["ref_mse_l"])) == (1, 4, 1, 0)


def test_control_sign_flipped_loss_is_the_swapped_pairs_loss():
    """A DPO loss with its sign flipped (beta -> -beta) trains exactly what pairs.swap trains
    (winner and loser exchanged): the swapped-pairs control run stands for that bug too."""
    g = torch.Generator().manual_seed(3)
    pw, pl, rw, rl, tw, tl = (torch.randn(4, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(6))
    flipped, _ = diffusion_dpo_loss(pw, pl, rw, rl, tw, tl, beta=-5000.0)
    swapped, _ = diffusion_dpo_loss(pl, pw, rl, rw, tl, tw, beta=5000.0)
    right, _ = diffusion_dpo_loss(pw, pl, rw, rl, tw, tl, beta=5000.0)
    assert float(flipped) == pytest.approx(float(swapped), rel=1e-12)
    assert abs(float(flipped) - float(right)) > 1.0


def test_hand_computed_batch_with_tie_and_loss():
    # pair 1: inside = 0 (policy = reference): loss log 2, accuracy 1/2
    # pair 2: mse_w 0, ref_w 1, mse_l 1, ref_l 0 -> inside = -0.5*1*((0-1)-(1-0)) = 1
    pred_w, pred_l = t(3.0, 0.0), t(3.0, 1.0)
    ref_w, ref_l = t(3.0, 1.0), t(3.0, 0.0)
    zeros = t(0.0, 0.0)
    loss, m = diffusion_dpo_loss(pred_w, pred_l, ref_w, ref_l, zeros, zeros, beta=1.0)
    expected = (math.log(2) + math.log1p(math.exp(-1))) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-12)
    assert float(m["implicit_acc"]) == 0.75 and float(m["reward_margin"]) == pytest.approx(0.5)


def reference_loss(pw, pl, rw, rl, tw, tl, beta):
    """A straightforward float64 transcription of Wallace et al. eq. 14, sample by sample."""
    losses = []
    for i in range(pw.shape[0]):
        mse = lambda a, b: float(((a[i] - b[i]) ** 2).mean())  # noqa: E731
        inside = -0.5 * beta * ((mse(pw, tw) - mse(rw, tw)) - (mse(pl, tl) - mse(rl, tl)))
        losses.append(math.log1p(math.exp(-inside)) if inside > -30 else -inside)
    return sum(losses) / len(losses)


@pytest.mark.parametrize("beta", [0.1, 50.0, 5000.0])
def test_equals_an_independent_implementation(beta):
    g = torch.Generator().manual_seed(3)
    shape = (5, 4, 3, 7)  # odd sizes
    pw, pl, rw, rl, tw, tl = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.05 for _ in range(6))
    loss, _ = diffusion_dpo_loss(pw, pl, rw, rl, tw, tl, beta)
    assert float(loss) == pytest.approx(reference_loss(pw.numpy(), pl.numpy(), rw.numpy(), rl.numpy(), tw.numpy(),
                                                       tl.numpy(), beta), rel=1e-9)


def test_gradient_flows_to_the_policy_only():
    g = torch.Generator().manual_seed(4)
    pw, pl = (torch.randn(2, 4, 2, 2, generator=g, requires_grad=True) for _ in range(2))
    rw, rl, tw, tl = (torch.randn(2, 4, 2, 2, generator=g) for _ in range(4))
    rw.requires_grad_(True)
    loss, _ = diffusion_dpo_loss(pw, pl, rw, rl, tw, tl, beta=10.0)
    loss.backward()
    assert pw.grad is not None and pl.grad is not None and rw.grad is None
    # d loss / d pred_w: winner's error is pushed down, loser's up
    inside = -5.0 * ((((pw - tw) ** 2).mean((1, 2, 3)) - ((rw - tw) ** 2).mean((1, 2, 3)))
                     - (((pl - tl) ** 2).mean((1, 2, 3)) - ((rl - tl) ** 2).mean((1, 2, 3))))
    coeff = (torch.sigmoid(-inside) * 5.0 / 2).detach()  # d(-logsig(x))/dx = -sig(-x); /B (mean over 2 pairs)
    expected = (coeff[:, None, None, None] * 2 * (pw - tw) / 16).detach()  # d mse / d pred = 2 (p - t) / (C H W)
    assert torch.allclose(pw.grad, expected, atol=1e-6)


def test_authors_variant_hand_computed():
    # whole-batch sums: mse_w = 1 + 0 = 1, ref_w = 4 + 1 = 5, mse_l = 1 + 1 = 2, ref_l = 0 + 0 = 0
    # inside = -1 * ((1 - 5) - (2 - 0)) = 6
    loss, m = authors_dpo_loss(t(1.0, 0.0), t(1.0, 1.0), t(2.0, 1.0), t(0.0, 0.0), t(0.0, 0.0), t(0.0, 0.0), beta=1.0)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-6)), abs=1e-12)
    assert float(m["reward_margin"]) == 6.0


def test_v_prediction_target():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, prediction_type="v_prediction")
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    steps = torch.tensor([0, 500, 999])
    v = prediction_target(scheduler, x0, eps, steps, "v_prediction")
    abar = scheduler.alphas_cumprod[steps].reshape(3, 1, 1, 1)
    assert torch.allclose(v, abar.sqrt() * eps - (1 - abar).sqrt() * x0, atol=1e-6)
    assert prediction_target(scheduler, x0, eps, steps, "epsilon") is eps
    with pytest.raises(ValueError, match="unknown prediction_type 'sample'"):
        prediction_target(scheduler, x0, eps, steps, "sample")


def test_lr_factor_at_every_step():
    cosine = [lr_factor(s, 2, 10, "cosine") for s in range(11)]
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 11)]
    assert cosine == pytest.approx(expected, abs=1e-15)
    assert cosine[2] == 1.0 and cosine[6] == pytest.approx(0.5) and cosine[10] == pytest.approx(0.0)
    assert [lr_factor(s, 0, 5, "constant") for s in range(5)] == [1.0] * 5
    assert [lr_factor(s, 3, 5, "constant") for s in range(5)] == [1 / 3, 2 / 3, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        lr_factor(0, 0, 5, "linear")


def test_batch_order_covers_each_epoch_and_is_a_pure_function():
    n, global_batch, world, micro = 10, 4, 2, 1  # grad accumulation 2
    seen = []
    for step in range(5):  # 20 positions = 2 epochs
        for acc in range(2):
            for rank in range(world):
                seen += batch_indices(7, n, global_batch, step, acc, rank, world, micro)
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]  # a new permutation each epoch
    # Step 3 alone (as after a resume) draws what the full run drew at step 3.
    assert batch_indices(7, n, global_batch, 3, 1, 0, world, micro) == [seen[3 * 4 + 2]]
