"""A start-up check of the kernels on the device that is about to train with them (rule train_dpo).

The kernels are tested under the CPU interpreter, but a GPU runs code compiled for its own
architecture by its own driver. Before the trainer swaps them in, this runs each op once on
small inputs on the training device: GroupNorm+SiLU forward and backward in both layouts
and in bf16 and fp32, and the DPO loss. It compares them with the float64 torch reference
at the tolerances of tests/test_kernels.py. A mismatch stops the run before any step, with
the numbers and the way out (`train.kernels: torch`). It takes milliseconds on a GPU,
several seconds under the interpreter.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

RTOL = {torch.float32: 1e-5, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}


class KernelCheckError(RuntimeError):
    pass


def error_ratio(out: torch.Tensor, ref: torch.Tensor, rtol: float) -> float:
    """max |out - ref| / (atol + rtol |ref|): <= 1 passes; NaN (an unwritten element) fails."""
    atol = 1e-5 * max(1.0, float(ref.abs().max()))
    ratio = ((out.detach().double() - ref).abs() / (atol + rtol * ref.abs())).max()
    return float("inf") if torch.isnan(ratio) else float(ratio)


def check_kernels(device: torch.device) -> dict[str, float]:
    """Run the checks on `device`; return each check's worst error ratio, or raise KernelCheckError."""
    from agfsync.train.kernels import dpo_loss, group_norm_silu

    g = torch.Generator().manual_seed(0)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        for channels_last in (False, True):
            shape = (2, 320, 5, 7)  # an SD channel count, odd spatial size
            x = (3.0 + 2.0 * torch.randn(shape, generator=g)).to(device, dtype)
            if channels_last:
                x = x.to(memory_format=torch.channels_last)
            w = (1.0 + 0.5 * torch.randn(shape[1], generator=g)).to(device).requires_grad_()
            b = (0.5 * torch.randn(shape[1], generator=g)).to(device).requires_grad_()
            dy = torch.randn(shape, generator=g).to(device, dtype)
            x.requires_grad_()
            y = group_norm_silu.group_norm_silu(x, w, b, 32, 1e-5, True)
            grads = torch.autograd.grad(y, (x, w, b), dy)
            x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
            y64 = group_norm_silu.reference(x64, w64, b64, 32, 1e-5, True)
            grads64 = torch.autograd.grad(y64, (x64, w64, b64), dy.double())
            name = f"group_norm_silu {str(dtype).removeprefix('torch.')} {'channels_last' if channels_last else 'nchw'}"
            for part, out, ref, rtol in (("y", y, y64, RTOL[dtype]), ("dx", grads[0], grads64[0], RTOL[dtype]),
                                         ("dw", grads[1], grads64[1], RTOL[torch.float32]),
                                         ("db", grads[2], grads64[2], RTOL[torch.float32])):
                results[f"{name} {part}"] = error_ratio(out, ref.detach(), rtol)
    target = torch.randn(1, 4, 6, 5, generator=g).to(device)
    pred = (torch.cat([target, target]) + torch.randn(2, 4, 6, 5, generator=g).to(device)).requires_grad_()
    ref = pred.detach() + 0.01 * torch.randn(2, 4, 6, 5, generator=g).to(device)
    loss, _ = dpo_loss.dpo_loss(pred, ref, target, target, 50.0)
    (grad,) = torch.autograd.grad(loss, pred)
    p64 = pred.detach().double().requires_grad_()
    loss64, _ = dpo_loss.reference(p64, ref.double(), target.double(), target.double(), 50.0)
    (grad64,) = torch.autograd.grad(loss64, p64)
    results["dpo_loss loss"] = error_ratio(loss.reshape(1), loss64.detach().reshape(1), 1e-4)
    results["dpo_loss grad"] = error_ratio(grad, grad64, 1e-4)
    failed = {k: v for k, v in results.items() if not v <= 1.0}
    if failed:
        raise KernelCheckError(
            f"kernels: the Triton kernels disagree with the torch reference on {device}: "
            + ", ".join(f"{k} at {v:.3g}x the tolerance" for k, v in failed.items())
            + ". Set train.kernels: torch to train without them, and please report this.")
    log.info("kernels: start-up check on %s passed (%d checks, worst at %.2fx the tolerance)", device, len(results),
             max(results.values()))
    return results
