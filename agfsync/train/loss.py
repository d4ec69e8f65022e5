"""Diffusion-DPO loss (rule train_dpo).

Wallace et al., "Diffusion Model Alignment Using Direct Preference Optimization"
(CVPR 2024), eq. 14, as in their official code. For a pair (x_w, x_l) with prompt c,
ONE noise draw eps and ONE timestep t are shared by winner and loser; the trained
network theta and the frozen reference predict the target (eps, or v for v-prediction):

    mse_w     = || target_w - pred_theta(x_w,t,c) ||^2     mean over C, H, W, per sample
    ref_w     = || target_w - pred_ref(x_w,t,c)   ||^2     (same for the loser: mse_l, ref_l)
    inside    = -0.5 * beta * ((mse_w - ref_w) - (mse_l - ref_l))
    loss      = mean over pairs of -log sigmoid(inside)

beta = 5000 with the 0.5 factor (2500 without it, as diffusers' SD script writes it).
implicit accuracy = fraction of pairs with inside > 0 (ties count 1/2); the implicit
rewards are r_w = -0.5 beta (mse_w - ref_w), r_l likewise, so inside = r_w - r_l is the
reward margin.

Shapes (legend): B pairs, C latent channels, H, W latent height and width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRICS = ("loss", "implicit_acc", "reward_margin", "mse_w", "mse_l", "ref_mse_w", "ref_mse_l")


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 predictions are compared in fp32; fp64 stays fp64 (tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def per_sample_mse(pred_BCHW: torch.Tensor, target_BCHW: torch.Tensor) -> torch.Tensor:
    return (_at_least_fp32(pred_BCHW) - _at_least_fp32(target_BCHW)).pow(2).mean(dim=(1, 2, 3))


def diffusion_dpo_loss(
    pred_w_BCHW: torch.Tensor,
    pred_l_BCHW: torch.Tensor,
    ref_w_BCHW: torch.Tensor,
    ref_l_BCHW: torch.Tensor,
    target_w_BCHW: torch.Tensor,
    target_l_BCHW: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, detached metrics). The reference predictions carry no gradient."""
    mse_w = per_sample_mse(pred_w_BCHW, target_w_BCHW)
    mse_l = per_sample_mse(pred_l_BCHW, target_l_BCHW)
    with torch.no_grad():
        ref_mse_w = per_sample_mse(ref_w_BCHW, target_w_BCHW)
        ref_mse_l = per_sample_mse(ref_l_BCHW, target_l_BCHW)
    inside_B = -0.5 * beta * ((mse_w - ref_mse_w) - (mse_l - ref_mse_l))
    loss = -F.logsigmoid(inside_B).mean()
    with torch.no_grad():
        accuracy = ((inside_B > 0).float() + 0.5 * (inside_B == 0).float()).mean()
        metrics = {
            "loss": loss.detach(), "implicit_acc": accuracy, "reward_margin": inside_B.mean(),
            "mse_w": mse_w.mean(), "mse_l": mse_l.mean(), "ref_mse_w": ref_mse_w.mean(), "ref_mse_l": ref_mse_l.mean(),
        }
    return loss, metrics


def authors_dpo_loss(
    pred_w_BCHW, pred_l_BCHW, ref_w_BCHW, ref_l_BCHW, target_w_BCHW, target_l_BCHW, beta: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The AGFSync authors' variant (docs/method.md, Where the authors' code deviates), for comparison only: squared
    norms summed over the WHOLE batch (not per sample), no 0.5 factor, beta = 1 in their
    code; the trainer also draws separate noise for winner and loser in this mode."""

    def total(pred, target):
        return (_at_least_fp32(pred) - _at_least_fp32(target)).pow(2).sum()

    mse_w, mse_l = total(pred_w_BCHW, target_w_BCHW), total(pred_l_BCHW, target_l_BCHW)
    with torch.no_grad():
        ref_mse_w, ref_mse_l = total(ref_w_BCHW, target_w_BCHW), total(ref_l_BCHW, target_l_BCHW)
    inside = -beta * ((mse_w - ref_mse_w) - (mse_l - ref_mse_l))
    loss = -F.logsigmoid(inside)
    with torch.no_grad():
        metrics = {
            "loss": loss.detach(), "implicit_acc": (inside > 0).float() + 0.5 * (inside == 0).float(),
            "reward_margin": inside.detach(), "mse_w": mse_w.detach(), "mse_l": mse_l.detach(),
            "ref_mse_w": ref_mse_w, "ref_mse_l": ref_mse_l,
        }
    return loss, metrics


LOSSES = {"dpo": diffusion_dpo_loss, "authors": authors_dpo_loss}


def prediction_target(scheduler, latents_BCHW: torch.Tensor, noise_BCHW: torch.Tensor, timesteps_B: torch.Tensor,
                      prediction_type: str) -> torch.Tensor:
    """What the UNet is trained to predict: eps, or v = alpha_t eps - sigma_t x0."""
    if prediction_type == "epsilon":
        return noise_BCHW
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents_BCHW, noise_BCHW, timesteps_B)
    raise ValueError(f"unknown prediction_type {prediction_type!r} (expected 'epsilon' or 'v_prediction')")
