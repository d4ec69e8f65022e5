"""Where the Triton kernels of agfsync.train.kernels can run, and the `train.kernels` switch.

Triton compiles its kernels for CUDA GPUs; on a CPU they run only under its numpy
interpreter (TRITON_INTERPRET=1, seconds per call: for tests, never for training). The
interpreter is chosen when a kernel module is IMPORTED (triton.jit reads the variable at
decoration time), so the kernel modules are imported lazily, after the environment is
final, and only when a kernel is about to run.

`train.kernels`: `auto` (default) runs the torch ops everywhere: on the one GPU measured so
far (an H200, bench/measurements/gpu_probe_h200.json) the fused GroupNorm kernels are 3-10x
faster than eager on the GPU, but a DPO step there is host-bound (the GPU busy 38% of an
SDXL step) and the step was slower with the Triton kernels (1.46 s per pair against 0.96).
`triton` asks for Triton and, where it cannot run, falls back to the torch reference with
a log line saying why (the result is the same op, only slower); `torch` never uses Triton.
"""


from __future__ import annotations

import contextlib
import logging
import os

import torch

log = logging.getLogger(__name__)

SETTINGS = ("auto", "triton", "torch")
AUTO_NOTE = ("the Triton kernels made the SDXL DPO step slower on an H200, bench/measurements/gpu_probe_h200.json; "
             "train.kernels: triton turns them on")
_POISON = False


def triton_unavailable_reason(device: torch.device) -> str | None:
    """None when the Triton kernels can run on tensors of `device`, else why not."""
    try:
        import triton  # noqa: F401
    except Exception as err:  # ImportError, or a broken install
        return f"triton cannot be imported ({type(err).__name__}: {err})"
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if device.type == "cuda":
        if interpret:
            return "TRITON_INTERPRET is set, and the interpreter runs on CPU tensors only"
        return None
    if device.type == "cpu":
        return None if interpret else "the device is cpu and TRITON_INTERPRET is not set (Triton compiles for GPUs only)"
    return f"the device is {device.type}, which the kernels do not support"


def use_triton(setting: str, device: torch.device, what: str = "train.kernels") -> bool:
    """Resolve the `kernels` setting for `device` and log the choice once per call."""
    if setting not in SETTINGS:
        raise ValueError(f"{what}: unknown kernels setting {setting!r} (expected one of {', '.join(SETTINGS)})")
    if setting == "torch":
        log.info("kernels: torch (%s)", what)
        return False
    reason = triton_unavailable_reason(device)
    if setting == "auto":
        log.info("kernels: torch (%s: auto on %s; %s)", what, device,
                 AUTO_NOTE if device.type == "cuda" else reason or "Triton compiles for GPUs only")
        return False
    if reason is None:
        log.info("kernels: triton (%s on %s%s)", what, device,
                 ", numpy interpreter: slow, for tests" if device.type == "cpu" else "")
        return True
    log.warning("kernels: triton was requested (%s) but cannot run here: %s; the torch reference runs instead",
                what, reason)
    return False


def empty(shape, dtype: torch.dtype, device: torch.device, like: torch.Tensor | None = None) -> torch.Tensor:
    """Every buffer a launcher allocates comes from here, so tests can poison them."""
    out = torch.empty_like(like, dtype=dtype) if like is not None else torch.empty(shape, dtype=dtype, device=device)
    if _POISON:
        out.fill_(float("nan"))
    return out


@contextlib.contextmanager
def poisoned_outputs():
    """Fill every launcher buffer with NaN first: an element a kernel forgets to write fails the test."""
    global _POISON
    before, _POISON = _POISON, True
    try:
        yield
    finally:
        _POISON = before


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
