"""Compile the kernels ahead of time for a GPU architecture (default Hopper, sm_90) with no GPU.

The interpreter that runs the tests executes kernels as numpy code and accepts things the
compiler would reject. This module runs the real launchers on meta tensors, with the real
SD1.5/SDXL shapes and no memory. Each kernel object is swapped for a recorder, so every launch
is captured with its arguments, constexprs and num_warps instead of running. Each distinct
specialization is then compiled with `triton.compile(..., target=GPUTarget("cuda", 90, 32))`
down to a cubin by the ptxas that ships with Triton. `cuobjdump` reads registers, spill
stores and shared memory per kernel from the cubin.

Like Triton's JIT, integer arguments equal to 1 (the unit stride of the contiguous axis) are
compile-time constants, so the compiled code matches what a launch on the GPU compiles.

    python -m agfsync.train.kernels.compile_check [--arch 90] [--models sd15 sdxl]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch

_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class _Recorder:
    """Stands in for a @triton.jit kernel: `kernel[grid](*args, **kwargs)` records instead of launching."""

    def __init__(self, kernel, launches: list):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((self.kernel, grid, args, kwargs))

        return launch


@contextlib.contextmanager
def recording(*modules):
    """Replace every JIT kernel of `modules` by a recorder; yield the list of captured launches."""
    from triton.runtime.jit import JITFunction

    launches: list = []
    saved = []
    for module in modules:
        for name, value in list(vars(module).items()):
            if isinstance(value, JITFunction) and name.endswith("_kernel"):
                saved.append((module, name, value))
                setattr(module, name, _Recorder(value, launches))
    try:
        yield launches
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def specialization(kernel, args, kwargs) -> tuple[dict, dict, dict]:
    """(signature, constexprs, options) of one launch, as Triton's JIT would specialize it."""
    options = {k: kwargs[k] for k in ("num_warps", "num_stages") if k in kwargs}
    values = dict(zip(kernel.arg_names, args))
    values.update({k: v for k, v in kwargs.items() if k not in options})
    signature, constexprs = {}, {}
    constexpr_params = {p.name for p in kernel.params if p.is_constexpr}
    for name in kernel.arg_names:
        value = values[name]
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + _DTYPES[value.dtype]
        elif name in constexpr_params or isinstance(value, bool) or (isinstance(value, int) and value == 1):
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, int):
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}: cannot specialize argument {name}={value!r}")
    return signature, constexprs, options


def _resource_usage(cubin: bytes) -> dict:
    """REG, STACK, SHARED, LOCAL from `cuobjdump --dump-resource-usage` (shipped with Triton)."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True,
                              check=True).stdout
    usage = {k.lower(): int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)}
    return usage


def compile_launches(launches, arch: int = 90) -> list[dict]:
    """Compile each distinct specialization for sm_<arch>; one row per kernel variant."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    rows, seen = [], set()
    for kernel, _grid, args, kwargs in launches:
        signature, constexprs, options = specialization(kernel, args, kwargs)
        key = (kernel.__name__, json.dumps(signature, sort_keys=True), json.dumps(constexprs, sort_keys=True),
               json.dumps(options, sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                  target=target, options=options)
        rows.append({"kernel": kernel.__name__, "constexprs": constexprs,
                     "pointer_dtypes": {k: v for k, v in signature.items() if v.startswith("*")},
                     "num_warps": compiled.metadata.num_warps, **_resource_usage(compiled.asm["cubin"])})
    return rows


def model_launches(models=("sd15", "sdxl")) -> list:
    """The launches of a training step on the real UNets' GroupNorm shapes (one DPO pair, bf16
    activations, fp32 master weights, both layouts, both GroupNorm paths: one program per group
    and chunked) and the DPO loss on their latents."""
    from agfsync.train.kernels import dpo_loss, group_norm_silu, group_norm_small

    shapes = {"sd15": [(2, 320, 64, 64), (2, 640, 32, 32), (2, 1280, 8, 8), (2, 2560, 16, 16), (2, 1920, 32, 32)],
              "sdxl": [(2, 320, 128, 128), (2, 640, 64, 64), (2, 1280, 32, 32), (2, 960, 128, 128)]}
    latents = {"sd15": 64, "sdxl": 128}
    meta = torch.device("meta")
    with recording(group_norm_silu, group_norm_small, dpo_loss) as launches:
        for model in models:
            for shape, layout, silu, small in itertools.product(
                    shapes[model], (torch.contiguous_format, torch.channels_last), (True, False), (True, False)):
                x = torch.empty(shape, dtype=torch.bfloat16, device=meta).to(memory_format=layout)
                w = torch.empty(shape[1], device=meta)
                hw = shape[2] * shape[3]
                tile = group_norm_silu.SMALL if small else \
                    group_norm_silu.tiling(shape[1], hw, layout == torch.channels_last)
                _, mean, rstd = group_norm_silu.forward(x, w, w, 32, 1e-5, silu, tile)
                group_norm_silu.backward(torch.empty_like(x), x, w, w, mean, rstd, 32, silu, tile)
            lat = (1, 4, latents[model], latents[model])
            pred = torch.empty((2, *lat[1:]), dtype=torch.bfloat16, device=meta)
            target = torch.empty(lat, device=meta)
            stats = dpo_loss.forward(pred, pred, target, target, 5000.0)
            dpo_loss.backward(torch.empty((), device=meta), pred, target, target, stats)
    return launches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (90: Hopper, sm_90)")
    parser.add_argument("--models", nargs="+", choices=["sd15", "sdxl"], default=["sd15", "sdxl"])
    parser.add_argument("--json", help="also write the table, with date and machine, to this file")
    args = parser.parse_args()
    os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, not interpreted ones (read when they are imported)
    rows = compile_launches(model_launches(args.models), args.arch)
    for row in rows:
        print(f"sm_{args.arch} {row['kernel']:<22} {json.dumps(row['constexprs'])}: {row['reg']} registers, "
              f"{row['local']} B spilled, {row['shared']} B shared")
    print(f"{len(rows)} kernel variants compiled for sm_{args.arch}; "
          f"{sum(r['local'] > 0 for r in rows)} spill to local memory")
    if args.json:
        import datetime
        import platform

        import triton

        from agfsync.core.io import write_json

        write_json(args.json, {"date": datetime.date.today().isoformat(), "compiled_on": platform.platform(),
                               "triton": triton.__version__, "target": f"sm_{args.arch}", "models": args.models,
                               "kernels": rows})


if __name__ == "__main__":
    main()
