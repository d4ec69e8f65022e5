"""Attention backend of the UNet: PyTorch SDPA (default) or xformers.

The only module that imports xformers. `auto` picks xformers when it can actually run
(CUDA present, package importable, its kernels load for this torch build: checked by
running one small attention), else SDPA, and logs the choice. Asking for `xformers`
where it cannot run is an error that says why. xformers has no CPU kernels.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

BACKENDS = ("sdpa", "xformers", "auto")


def xformers_unavailable_reason(device: torch.device) -> str | None:
    """None when xformers can run on `device`, else why not."""
    if device.type != "cuda":
        return f"device is {device.type}, and xformers has no CPU kernels"
    try:
        import xformers.ops as xops
    except Exception as err:  # ImportError, or an ABI error raised while loading
        return f"xformers cannot be imported ({type(err).__name__}: {err})"
    try:
        q = torch.zeros(1, 8, 1, 16, device=device, dtype=torch.float16)
        xops.memory_efficient_attention(q, q, q)
    except Exception as err:  # e.g. kernels built for another torch (ABI mismatch)
        return f"xformers kernels do not run with torch {torch.__version__} ({type(err).__name__}: {err})"
    return None


def configure_attention(module, backend: str, device: torch.device) -> str:
    """Set the attention backend of a diffusers pipeline or UNet; return the one in use."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    if backend == "sdpa":
        _set_sdpa(module)
        return "sdpa"
    reason = xformers_unavailable_reason(device)
    if reason is None:
        module.enable_xformers_memory_efficient_attention()
        log.info("attention: xformers (requested: %s)", backend)
        return "xformers"
    if backend == "xformers":
        raise RuntimeError(
            f"attention backend 'xformers' was requested (candidates.attention) but cannot run here: {reason}. "
            "Use 'sdpa' or 'auto'."
        )
    log.info("attention: auto chose sdpa because %s", reason)
    _set_sdpa(module)
    return "sdpa"


def _set_sdpa(module) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = getattr(module, "unet", module)
    unet.set_attn_processor(AttnProcessor2_0())
