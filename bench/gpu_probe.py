"""Where the Triton GroupNorm kernels lose on the GPU, and whether one program per group wins.

The first H200 run of bench/gpu.sh (bench/measurements/gpu_h200.json) found the fused
GroupNorm(+SiLU) kernels slower than eager (forward 0.43-0.94x, backward 0.56x) and the SDXL
DPO step slower with them (1.36 s/pair against 1.11). Every eager time there was 50-600 us
for tensors a 4.2 TB/s copy moves in 1-15 us, so the question is host time against GPU time.
This probe answers it, in one call of a few minutes:

    python bench/gpu_probe.py --out DIR [--budget-s 300]   # on the GPU machine, after bench/gpu.sh's install
    python bench/gpu_probe.py --smoke --out DIR            # the same code on a CPU (interpreter, tiny shapes)

- gn: representative SD1.5/SDXL GroupNorm(+SiLU) shapes, bf16 NCHW, three implementations:
  eager (F.group_norm + F.silu under bf16 autocast), chunked (group_norm_silu's kernels,
  3 launches each way) and small (group_norm_small, 1 launch each way). Per call: the
  host-inclusive time (triton's do_bench, as bench/kernels.py) and the device time (the
  profiler's sum of kernel durations over 5 calls).
- dpo: the SDXL 1024 px DPO step of bench/gpu_steps.dpo (ZeRO-2, AdamW8bit, checkpointing,
  SDPA, micro-batch 1) with train.kernels torch, and triton with every GroupNorm on the small
  path, then on the chunked path: seconds per pair over
  --steps steps after 2 warm-ups, then one profiled step: its wall time, the GPU's kernel
  time, the GroupNorm kernels' share, the top kernels and the top CPU ops; with --stacks also
  the Python frames behind the host time (top_cpu_stacks).

Each part runs in its own process with its share of --budget-s; DIR/probe.json is rewritten
after every record, so a part cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/kernels.py shadows `kernels`
sys.path.insert(0, str(ROOT))

GN_SHAPES = {  # (shape, eps, silu): the heaviest and the smallest calls of a DPO pair (bench/kernels.py rows)
    "sdxl": [((2, 320, 128, 128), 1e-5, True), ((2, 640, 64, 64), 1e-5, True), ((2, 1280, 32, 32), 1e-5, True),
             ((2, 1280, 32, 32), 1e-6, False)],
    "sd15": [((2, 320, 64, 64), 1e-5, True), ((2, 640, 32, 32), 1e-5, True), ((2, 1280, 16, 16), 1e-5, True),
             ((2, 1280, 8, 8), 1e-5, True), ((2, 640, 32, 32), 1e-6, False)],
}
SMOKE_SHAPES = {"tiny": [((2, 64, 4, 4), 1e-5, True), ((2, 320, 3, 5), 1e-6, False)]}
GN_KERNELS = ("_fwd_kernel", "_bwd_kernel", "_stats_kernel", "_group_stats_kernel", "_apply_kernel",
              "_bwd_partials_kernel", "_bwd_group_kernel", "_bwd_dx_kernel", "group_norm")
DPO_MODES = [("torch", None), ("triton_small", 1 << 40), ("triton_chunked", 0)]  # (label, SMALL_GROUP_MAX override)
SHARES = {"gn": 0.3, "dpo": 0.7}


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def kernel_times(prof) -> dict[str, float]:
    """Microseconds per device kernel name over a profile (CUDA events only)."""
    import torch

    out: dict[str, float] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            out[e.name] = out.get(e.name, 0.0) + e.time_range.elapsed_us()
    return out


def device_ms(fn, calls: int = 5) -> float | None:
    """Device milliseconds per call: the profiler's kernel durations (host gaps excluded); None on a CPU."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync()
    cuda = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
        sync()
    return round(sum(kernel_times(prof).values()) / calls / 1e3, 4) if cuda else None


def host_ms(fn, smoke: bool) -> float:
    """Milliseconds per call with the host's launch time in it (triton's do_bench on a GPU)."""
    import torch

    if torch.cuda.is_available() and not smoke:
        from triton.testing import do_bench

        return round(float(do_bench(fn, warmup=25, rep=100, return_mode="median")), 4)
    start = time.perf_counter()
    fn()
    return round((time.perf_counter() - start) * 1e3, 4)


# ------------------------------------------------------------------------------------------------ gn

def part_gn(record, smoke: bool, deadline: float) -> None:
    import torch
    import torch.nn.functional as F

    from agfsync.train.kernels import group_norm_silu as gns

    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    rows = []
    for arch, shapes in (SMOKE_SHAPES if smoke else GN_SHAPES).items():
        for shape, eps, silu in shapes:
            if time.monotonic() > deadline - 10:
                record(gn_rows=rows, gn_stopped="budget")
                return
            g = torch.Generator().manual_seed(1)
            x = (1.0 + 2.0 * torch.randn(shape, generator=g)).to(device, torch.bfloat16).requires_grad_()
            w = (1.0 + 0.5 * torch.randn(shape[1], generator=g)).to(device).requires_grad_()
            b = (0.5 * torch.randn(shape[1], generator=g)).to(device).requires_grad_()

            def eager(inp):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    y = F.group_norm(inp, 32, w, b, eps)
                    return F.silu(y) if silu else y

            def ours(tile):
                return lambda inp: gns.group_norm_silu(inp, w, b, 32, eps, silu, tile)

            row = {"arch": arch, "shape": list(shape), "eps": eps, "silu": silu,
                   "group_elements": shape[1] // 32 * shape[2] * shape[3]}
            want = eager(x).float()
            chunked = gns.tiling(shape[1], shape[2] * shape[3], False)  # NCHW
            for name, fn in (("eager", eager), ("chunked", ours(chunked)), ("small", ours(gns.SMALL))):
                y = fn(x)
                grad = torch.ones_like(y)
                bwd = (lambda y=y, grad=grad: torch.autograd.grad(y, (x, w, b), grad, retain_graph=True))
                row[name] = {"host_fwd_ms": host_ms(lambda fn=fn: fn(x), smoke), "host_bwd_ms": host_ms(bwd, smoke),
                             "device_fwd_ms": device_ms(lambda fn=fn: fn(x)), "device_bwd_ms": device_ms(bwd),
                             "max_abs_diff_vs_eager": round(float((y.float() - want).abs().max()), 5)}
                del y, grad
            nbytes = x.numel() * x.element_size()
            for name in ("chunked", "small"):
                dev = row[name]["device_fwd_ms"]
                row[name]["device_fwd_gbs"] = round(2 * nbytes / dev / 1e6, 1) if dev else None
            rows.append(row)
            record(gn_rows=rows)


# ------------------------------------------------------------------------------------------------ dpo

def part_dpo(record, smoke: bool, deadline: float, steps: int, stacks: bool = False) -> None:
    import torch

    from agfsync.core.sections import Settings
    from agfsync.demo.toy import toy_cache

    work = Path(tempfile.mkdtemp(prefix="agfsync-probe-dpo-"))
    arch, resolution = ("sd15", 64) if smoke else ("sdxl", 1024)
    device = torch.device("cpu" if smoke else "cuda")
    pretrained = bench_module("gpu_steps").dpo_pretrained(arch, work, device, smoke)
    sdxl = arch == "sdxl"
    cache = toy_cache(work / "cache", num_pairs=8, family="sdxl" if sdxl else "sd1", latent_size=resolution // 8,
                      embed_dim=2048 if sdxl else None, pooled_dim=1280, resolution=resolution)
    runs = []
    for label, small_max in DPO_MODES:
        left = deadline - time.monotonic()
        if left < 30:
            runs.append({"mode": label, "skipped": f"{left:.0f} s of budget left"})
            break
        args = argparse.Namespace(global_batch=1, micro_batch=1, zero_stage=2, checkpointing=True, attention="sdpa",
                                  kernels="torch" if label == "torch" else "triton")
        cfg = bench_module("dpo_step").make_config(pretrained, args, model=arch)
        cfg["device"] = "cuda" if not smoke else "cpu"
        cfg_path = work / f"cfg-{label}.json"
        cfg_path.write_text(Settings.from_dict(cfg).to_json())
        out_path = work / f"run-{label}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--dpo-child", str(cfg_path), "--cache", str(cache),
               "--model", arch, "--steps", str(steps), "--child-out", str(out_path)]
        if small_max is not None:
            cmd += ["--small-max", str(small_max)]
        if stacks:
            cmd += ["--stacks"]
        env = dict(os.environ, TRITON_INTERPRET="1") if smoke else None
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left - 5, env=env)
            run = json.loads(out_path.read_text()) if out_path.exists() else {}
            if proc.returncode != 0:
                run["error"] = proc.stderr[-1500:]
        except subprocess.TimeoutExpired:
            run = json.loads(out_path.read_text()) if out_path.exists() else {}
            run["error"] = "timeout"
        runs.append({"mode": label, "small_group_max": small_max, "wall_s": round(time.perf_counter() - start, 1),
                     **run})
        record(dpo_runs=runs)


def dpo_child(args) -> None:
    """One DPO mode in this process: timed steps, then one profiled step; writes --child-out as it goes."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from agfsync.core.sections import Settings
    from agfsync.train.kernels import group_norm_silu
    from agfsync.train.trainer import DPOTrainer

    out = Path(args.child_out)
    data: dict = {}

    def save(**fields):
        data.update(fields)
        out.write_text(json.dumps(data, indent=1))

    if args.small_max is not None:
        group_norm_silu.SMALL_GROUP_MAX = args.small_max
    save(small_group_max=group_norm_silu.SMALL_GROUP_MAX)
    settings = Settings.from_json(Path(args.dpo_child).read_text())
    trainer = DPOTrainer(settings, args.model, args.cache, tempfile.mkdtemp(), tempfile.mkdtemp())
    for step in range(2):  # warm-up: compiles every kernel variant
        trainer.micro_step(step, 0)
    sync()
    times = []
    for step in range(2, 2 + args.steps):
        start = time.perf_counter()
        trainer.micro_step(step, 0)
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    save(step_s=[round(t, 4) for t in times], median_s_per_pair=round(times[len(times) // 2], 4),
         peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None)
    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    extra = {}
    if args.stacks:  # torch 2.10/2.11 fills FunctionEvent.stack only with the verbose experimental config
        from torch._C._profiler import _ExperimentalConfig

        extra = {"with_stack": True, "experimental_config": _ExperimentalConfig(verbose=True)}
    with profile(activities=activities, **extra) as prof:
        start = time.perf_counter()
        trainer.micro_step(2 + args.steps, 0)
        sync()
        wall = time.perf_counter() - start
    kernels = kernel_times(prof)
    total = sum(kernels.values())
    gn = sum(v for k, v in kernels.items() if any(s in k for s in GN_KERNELS))
    top_k = sorted(kernels.items(), key=lambda kv: -kv[1])[:15]
    cpu = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]
    save(profiled_step={
        "wall_s": round(wall, 4), "gpu_kernel_s": round(total / 1e6, 4),
        "gpu_busy_fraction": round(total / 1e6 / wall, 3) if wall else None,
        "group_norm_kernel_s": round(gn / 1e6, 4), "kernel_launches": sum(1 for e in prof.events()
                                                                          if e.device_type.name == "CUDA"),
        "top_kernels_ms": [[k[:90], round(v / 1e3, 3)] for k, v in top_k],
        "top_cpu_ops_self_ms": [[e.key[:90], round(e.self_cpu_time_total / 1e3, 3), e.count] for e in cpu]})
    if args.stacks:  # where in our Python the host time goes: self CPU time by op and its 5 innermost frames
        by_stack = sorted(prof.key_averages(group_by_stack_n=5), key=lambda e: -e.self_cpu_time_total)[:25]
        save(top_cpu_stacks=[{"op": e.key[:90], "self_ms": round(e.self_cpu_time_total / 1e3, 3), "count": e.count,
                              "stack": list(e.stack)[:5]} for e in by_stack])


# ------------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="probe-out", help="folder for probe.json (default probe-out)")
    parser.add_argument("--budget-s", type=float, default=300, help="seconds for both parts (default 300)")
    parser.add_argument("--steps", type=int, default=6, help="timed DPO steps per mode (default 6)")
    parser.add_argument("--only", nargs="+", choices=list(SHARES), help="run these parts only")
    parser.add_argument("--stacks", action="store_true",
                        help="profile the DPO steps with Python stacks: top_cpu_stacks names the frames behind each "
                             "op's host time (slower profiling)")
    parser.add_argument("--smoke", action="store_true", help="a CPU run of the same code (interpreter, tiny shapes)")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--deadline-in", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--dpo-child", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--small-max", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if args.dpo_child:
        dpo_child(args)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "probe.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    if args.part:  # a child: one part, writes out/probe-<part>.json
        deadline = time.monotonic() + args.deadline_in
        part_path = out / f"probe-{args.part}.json"
        part: dict = {}

        def record(**fields):
            part.update(fields)
            tmp = part_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(part, indent=1))
            os.replace(tmp, part_path)

        if args.part == "gn":
            part_gn(record, args.smoke, deadline)
        else:
            part_dpo(record, args.smoke, deadline, 2 if args.smoke else args.steps, args.stacks)
        return 0
    import platform

    data.update(date=time.strftime("%Y-%m-%d"), smoke=args.smoke, platform=platform.platform(), budget_s=args.budget_s)
    status = 0
    for name in args.only or list(SHARES):
        budget = args.budget_s * SHARES[name] / sum(SHARES[n] for n in (args.only or SHARES))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--out", str(out),
               "--deadline-in", str(budget - 5)] + (["--smoke"] if args.smoke else []) + ["--steps", str(args.steps)] \
            + (["--stacks"] if args.stacks else [])
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=budget, capture_output=True, text=True)
            state = "ok" if proc.returncode == 0 else "failed"
            err = proc.stderr[-2000:] if proc.returncode else None
        except subprocess.TimeoutExpired as exc:
            state, err = "timeout", str(exc.stderr or "")[-2000:]
        part_path = out / f"probe-{name}.json"
        data[name] = {"status": state, "seconds": round(time.perf_counter() - start, 1),
                      **(json.loads(part_path.read_text()) if part_path.exists() else {}),
                      **({"error": err} if err else {})}
        status |= state != "ok"
        path.write_text(json.dumps(data, indent=1))
        print(f"gpu_probe: {name}: {state} in {data[name]['seconds']} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
