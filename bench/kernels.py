"""agfsync's Triton kernels vs torch eager and torch.compile, on the real SD1.5 and SDXL shapes.

    python bench/kernels.py                          # on a CUDA GPU: SD1.5 at 512 px and SDXL at 1024 px
    python bench/kernels.py --arch sdxl --layout channels_last --dpo-batch 1
    python bench/kernels.py --smoke --out /tmp/k.json   # CPU, TRITON_INTERPRET=1, tiny shapes: checks the
                                                     # script end to end (CI runs it); its timings mean nothing

1. Copy bandwidth: device-to-device copy of a 1 GiB buffer (read + write), the yardstick.
2. GroupNorm(+SiLU), one row per distinct (shape, SiLU) of the UNet's GroupNorm inputs. The
   shapes are found by running the real architecture on the meta device with 2 latents, one
   DPO pair. Each row gives forward and backward time for eager (F.group_norm + F.silu under
   bf16 autocast, as the UNet trains), torch.compile of the same function, and ours. Achieved
   bandwidth counts the minimum traffic at the activation dtype (forward: read x and write y;
   backward: read x and dy and write dx) and is reported against the copy bandwidth. Before
   timing, each row checks ours against a float64 reference with the tests' tolerances.
3. The Diffusion-DPO loss, forward and backward, on the latents of one pair.
4. End to end on the real-sized UNet with random weights: a bf16-autocast forward (no grad),
   and a DPO step (policy forward and backward on a pair, reference forward, loss, fused
   AdamW), stock vs kernels swapped in. Times and peak memory.

Goals (issue 7): GroupNorm+SiLU forward and backward each >= 2x eager and >= 70% of copy
bandwidth; a measurable gain on the SDXL DPO step. Times come from triton.testing.do_bench
(median; it flushes L2 between runs) on a GPU and from the best of a few runs on a CPU.
Results: bench/measurements/kernels_<gpu|smoke>.json.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Python put bench/ first on sys.path; there this file would shadow any `kernels` package (bitsandbytes
# probes for one at import). Take bench/ off and load bench/common.py by path instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _architectures():
    """bench/architectures.py, loaded by path (bench/ is kept off sys.path here, see above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_architectures", HERE / "architectures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ARCHS = {"sd15": {"latent": 64, "context": 768}, "sdxl": {"latent": 128, "context": 2048}}


def unet_inputs(unet, batch: int, latent: int, device, dtype=None):
    import torch

    g = torch.Generator().manual_seed(0)
    cfg = unet.config
    kw = {"encoder_hidden_states": torch.randn(batch, 77, cfg.cross_attention_dim, generator=g)}
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled, generator=g),
                                   "time_ids": torch.tensor([[8.0 * latent, 8.0 * latent, 0, 0, 8.0 * latent,
                                                              8.0 * latent]] * batch)}
    to = (lambda t: t.to(device, dtype)) if dtype is not None else (lambda t: t.to(device))
    kw = {k: ({kk: to(vv) for kk, vv in v.items()} if isinstance(v, dict) else to(v)) for k, v in kw.items()}
    x = to(torch.randn(batch, cfg.in_channels, latent, latent, generator=g))
    t = torch.tensor([500] * batch, device=device)
    return x, t, kw


def group_norm_rows(arch: str, tiny=None) -> list[dict]:
    """Distinct (input shape, groups, eps, silu) of the UNet's GroupNorms for one DPO pair, with counts."""
    import torch

    build_unet = _architectures().build_unet
    from agfsync.train.kernels.modules import FusedGroupNorm, swap_group_norm_silu

    unet = tiny if tiny is not None else build_unet(arch, empty=True)
    unet = copy.deepcopy(unet).to("meta") if tiny is not None else unet
    logging.getLogger("agfsync.train.kernels").setLevel(logging.ERROR)  # the meta run falls back to torch: expected
    swap_group_norm_silu(unet)
    rows: dict[tuple, int] = {}

    def hook(module, inputs, _output):
        key = (tuple(inputs[0].shape), module.num_groups, module.eps, module.silu)
        rows[key] = rows.get(key, 0) + 1

    for m in unet.modules():
        if isinstance(m, FusedGroupNorm):
            m.register_forward_hook(hook)
    latent = ARCHS[arch]["latent"] if tiny is None else tiny.config.sample_size
    x, t, kw = unet_inputs(unet, 2, latent, torch.device("meta"))
    with torch.no_grad():
        unet(x, t, **kw)
    logging.getLogger("agfsync.train.kernels").setLevel(logging.NOTSET)
    return [{"shape": list(k[0]), "groups": k[1], "eps": k[2], "silu": k[3], "count": n}
            for k, n in sorted(rows.items())]


class Timer:
    def __init__(self, device, smoke: bool):
        self.device, self.smoke = device, smoke

    def __call__(self, fn) -> float:
        """Milliseconds per call."""
        if self.device.type == "cuda":
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
        if not self.smoke:  # --smoke checks that the script runs: one call, no warm-up
            fn()
        best = float("inf")
        for _ in range(1 if self.smoke else 5):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best * 1e3


def copy_bandwidth(device, timer, smoke: bool) -> float:
    """GB/s of a device-to-device copy (bytes read + bytes written)."""
    import torch

    n = (1 << 20) if smoke else (1 << 29)  # 1 GiB of bf16 on a GPU
    src = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / ms / 1e6


def _errors(outs, refs, dtypes) -> dict:
    """Per output: max |error| and whether it is within the start-up check's tolerance (the tests')."""
    from agfsync.train.kernels.self_check import RTOL, error_ratio

    return {name: {"max_abs_error": float((out.detach().double() - ref).abs().max()),
                   "within_tolerance": error_ratio(out, ref, RTOL[dtype]) <= 1.0}
            for name, out, ref, dtype in zip(("y", "dx", "dw", "db"), outs, refs, dtypes)}


def bench_group_norm(row: dict, layout: str, device, timer, copy_gbs: float, compile_: bool, autocast: bool) -> dict:
    import torch
    import torch.nn.functional as F

    from agfsync.train.kernels.group_norm_silu import group_norm_silu, reference

    dtype = torch.bfloat16 if autocast else torch.float32
    g = torch.Generator(device="cpu").manual_seed(1)
    shape, groups, eps, silu = tuple(row["shape"]), row["groups"], row["eps"], row["silu"]
    x = (1.0 + 2.0 * torch.randn(shape, generator=g)).to(device, dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    w = (1.0 + 0.5 * torch.randn(shape[1], generator=g)).to(device).requires_grad_()  # fp32 master weights
    b = (0.5 * torch.randn(shape[1], generator=g)).to(device).requires_grad_()
    x.requires_grad_()

    def eager(inp):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            y = F.group_norm(inp, groups, w, b, eps)
            return F.silu(y) if silu else y

    def ours(inp):
        return group_norm_silu(inp, w, b, groups, eps, silu)

    # correctness at this shape, on this device, against float64
    dy = torch.randn(shape, generator=g).to(device, dtype)
    y = ours(x)
    outs = (y, *torch.autograd.grad(y, (x, w, b), dy))
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    y64 = reference(x64, w64, b64, groups, eps, silu)
    refs = (y64, *torch.autograd.grad(y64, (x64, w64, b64), dy.double()))
    errors = _errors(outs, [r.detach() for r in refs], (dtype,) * 2 + (torch.float32,) * 2)
    del y64, refs, x64, outs

    impls = {"eager": eager, "ours": ours}
    if compile_:
        impls["compile"] = torch.compile(eager, dynamic=False)
    times = {}
    for name, fn in impls.items():
        y = fn(x)
        grad = torch.ones_like(y)
        times[name] = {"fwd_ms": timer(lambda fn=fn: fn(x)),
                       "bwd_ms": timer(lambda y=y, grad=grad: torch.autograd.grad(y, (x, w, b), grad,
                                                                                    retain_graph=True))}
        del y, grad
    nbytes = x.numel() * x.element_size()
    out = {**row, "layout": layout, "dtype": str(dtype).removeprefix("torch."), "check": errors}
    for name, t in times.items():
        out[name] = {**{k: round(v, 4) for k, v in t.items()},
                     "fwd_gbs": round(2 * nbytes / t["fwd_ms"] / 1e6, 1),
                     "bwd_gbs": round(3 * nbytes / t["bwd_ms"] / 1e6, 1)}
    ours_t = out["ours"]
    out["speedup_vs_eager"] = {"fwd": round(times["eager"]["fwd_ms"] / times["ours"]["fwd_ms"], 2),
                               "bwd": round(times["eager"]["bwd_ms"] / times["ours"]["bwd_ms"], 2)}
    if compile_:
        out["speedup_vs_compile"] = {"fwd": round(times["compile"]["fwd_ms"] / times["ours"]["fwd_ms"], 2),
                                     "bwd": round(times["compile"]["bwd_ms"] / times["ours"]["bwd_ms"], 2)}
    out["fraction_of_copy_bandwidth"] = {"fwd": round(ours_t["fwd_gbs"] / copy_gbs, 3),
                                         "bwd": round(ours_t["bwd_gbs"] / copy_gbs, 3)}
    return out


def bench_dpo_loss(arch: str, latent: int, pairs: int, device, timer, compile_: bool, autocast: bool) -> dict:
    import torch

    from agfsync.train.kernels.dpo_loss import dpo_loss, reference

    dtype = torch.bfloat16 if autocast else torch.float32
    g = torch.Generator().manual_seed(2)
    shape = (pairs, 4, latent, latent)
    target_w, target_l = torch.randn(shape, generator=g).to(device), torch.randn(shape, generator=g).to(device)
    pred = (torch.cat([target_w, target_l]) + torch.randn((2 * pairs, 4, latent, latent), generator=g).to(device))
    ref = (pred + 0.01 * torch.randn(pred.shape, generator=g).to(device)).to(dtype)
    pred = pred.to(dtype).requires_grad_()

    def eager(p):  # what the trainer runs without kernels: split halves, fp32 reference predictions
        return reference(p, ref.float(), target_w, target_l, 5000.0)[0]

    impls = {"eager": eager, "ours": lambda p: dpo_loss(p, ref, target_w, target_l, 5000.0)[0]}
    if compile_:
        impls["compile"] = torch.compile(eager, dynamic=False)
    out = {"arch": arch, "shape": list(shape), "pred_dtype": str(dtype).removeprefix("torch.")}
    loss64 = eager(pred.detach().double().requires_grad_())
    out["loss_abs_error"] = abs(float(impls["ours"](pred).detach()) - float(loss64.detach()))
    for name, fn in impls.items():
        loss = fn(pred)
        out[name] = {"fwd_ms": round(timer(lambda fn=fn: fn(pred)), 4),
                     "bwd_ms": round(timer(lambda loss=loss: torch.autograd.grad(loss, pred, retain_graph=True)), 4)}
    out["speedup_vs_eager"] = {k: round(out["eager"][f"{k}_ms"] / out["ours"][f"{k}_ms"], 2) for k in ("fwd", "bwd")}
    return out


def bench_end_to_end(arch: str, device, timer, autocast: bool, checkpointing: bool, tiny=None) -> dict:
    import torch

    build_unet = _architectures().build_unet
    from agfsync.train.loss import diffusion_dpo_loss
    from agfsync.train.kernels.dpo_loss import dpo_loss
    from agfsync.train.kernels.modules import swap_group_norm_silu

    torch.manual_seed(0)
    with torch.device(device):
        stock = tiny.to(device) if tiny is not None else build_unet(arch)
    latent = stock.config.sample_size
    reference = copy.deepcopy(stock).to(torch.bfloat16 if autocast else torch.float32).requires_grad_(False).eval()
    if checkpointing:
        stock.enable_gradient_checkpointing()
    x, t, kw = unet_inputs(stock, 2, latent, device)
    target = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(3)).to(device)
    optimizer = torch.optim.AdamW(stock.parameters(), lr=1e-8, fused=device.type == "cuda")
    result = {"arch": arch, "latent": latent, "batch": 2, "gradient_checkpointing": checkpointing}

    def forward(model, inp):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(inp, t, **kw).sample

    def step(fused_loss: bool):
        pred = forward(stock, x)
        with torch.no_grad():
            ref = forward(reference, x.to(next(reference.parameters()).dtype))
        if fused_loss:
            loss, _ = dpo_loss(pred, ref, target, target, 5000.0)
        else:
            loss, _ = diffusion_dpo_loss(pred[:1], pred[1:], ref[:1].float(), ref[1:].float(), target, target, 5000.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def measure(label: str, fused_loss: bool):
        with torch.no_grad():
            result[f"{label}_forward_ms"] = round(timer(lambda: forward(reference, x.to(
                next(reference.parameters()).dtype))), 3)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        result[f"{label}_dpo_step_ms"] = round(timer(lambda: step(fused_loss)), 3)
        if device.type == "cuda":
            result[f"{label}_dpo_step_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)

    measure("stock", fused_loss=False)
    swap_group_norm_silu(stock)
    swap_group_norm_silu(reference)
    measure("kernels", fused_loss=True)
    result["forward_speedup"] = round(result["stock_forward_ms"] / result["kernels_forward_ms"], 3)
    result["dpo_step_speedup"] = round(result["stock_dpo_step_ms"] / result["kernels_dpo_step_ms"], 3)
    del stock, reference, optimizer
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHS), default=sorted(ARCHS))
    parser.add_argument("--layout", nargs="+", choices=["nchw", "channels_last"], default=["nchw"],
                        help="activation memory format(s) for the GroupNorm rows (the UNet runs NCHW)")
    parser.add_argument("--dpo-batch", type=int, default=1, help="pairs in the DPO loss rows")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (saves its compile time)")
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the real-sized UNet runs")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in the DPO step")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU check of this script: tiny UNet shapes, Triton interpreter, no torch.compile")
    parser.add_argument("--out", help="where to write the JSON (default: bench/measurements/kernels_<gpu|smoke>.json)")
    args = parser.parse_args()

    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported
    import torch

    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_common", HERE / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)

    from agfsync.train.kernels.runtime import triton_unavailable_reason

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    reason = triton_unavailable_reason(device)
    if reason is not None or (device.type == "cpu" and not args.smoke):
        raise SystemExit(f"bench/kernels.py needs a CUDA GPU with Triton (or --smoke on a CPU): "
                         f"{reason or 'no CUDA device'}")
    timer = Timer(device, args.smoke)
    autocast = device.type == "cuda"
    compile_ = not args.no_compile and not args.smoke
    tiny = None
    if args.smoke:
        from agfsync.demo.tiny_models import sd1_unet

        torch.manual_seed(0)
        tiny = sd1_unet()  # the demo's tiny SD 1.x UNet
        args.arch = ["sd15"]

    result = {"benchmark": "Triton kernels vs torch eager and torch.compile (issue 7)", "smoke": args.smoke,
              "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    if device.type == "cuda":
        import triton

        result["cuda"] = {"capability": "sm_%d%d" % torch.cuda.get_device_capability(device),
                          "triton": triton.__version__, "torch_cuda": torch.version.cuda}
    copy_gbs = copy_bandwidth(device, timer, args.smoke)
    result["copy_bandwidth_gbs"] = round(copy_gbs, 1)
    print(f"device-to-device copy: {copy_gbs:.1f} GB/s", flush=True)
    result["group_norm"], result["dpo_loss"], result["end_to_end"] = [], [], []
    for arch in args.arch:
        rows = group_norm_rows(arch, tiny)
        if args.smoke:  # the interpreter takes ~1 s per kernel call: one row with SiLU, one without
            rows = [next(r for r in rows if r["silu"]), next(r for r in rows if not r["silu"])]
        for row in rows:
            for layout in args.layout:
                r = bench_group_norm(row, layout, device, timer, copy_gbs, compile_, autocast)
                r["arch"] = arch
                result["group_norm"].append(r)
                print(f"{arch} {row['shape']} silu={row['silu']} x{row['count']} {layout}: "
                      f"ours fwd {r['ours']['fwd_ms']:.3f} ms ({r['fraction_of_copy_bandwidth']['fwd']:.0%} of copy, "
                      f"{r['speedup_vs_eager']['fwd']}x eager) bwd {r['ours']['bwd_ms']:.3f} ms "
                      f"({r['fraction_of_copy_bandwidth']['bwd']:.0%}, {r['speedup_vs_eager']['bwd']}x eager) "
                      f"check {'ok' if all(c['within_tolerance'] for c in r['check'].values()) else 'FAILED'}",
                      flush=True)
        latent = tiny.config.sample_size if tiny is not None else ARCHS[arch]["latent"]
        r = bench_dpo_loss(arch, latent, args.dpo_batch, device, timer, compile_, autocast)
        result["dpo_loss"].append(r)
        print(f"{arch} DPO loss {r['shape']}: {r['speedup_vs_eager']} x eager", flush=True)
        if not args.no_end_to_end:
            r = bench_end_to_end(arch, device, timer, autocast, args.checkpointing, tiny)
            result["end_to_end"].append(r)
            print(f"{arch} UNet forward {r['forward_speedup']}x, DPO step {r['dpo_step_speedup']}x", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result["summary"] = summarise(result)
    print(result["summary"], flush=True)
    if args.out:
        import json

        Path(args.out).write_text(json.dumps({"machine": common.machine(), **result}, indent=2) + "\n")
    else:
        common.save("kernels_smoke" if args.smoke else "kernels_gpu", result)


def summarise(result: dict) -> dict:
    """Time-weighted over the UNet's GroupNorm calls (each row x its count), per arch."""
    summary = {}
    for arch in sorted({r["arch"] for r in result["group_norm"]}):
        rows = [r for r in result["group_norm"] if r["arch"] == arch and r["layout"] == "nchw"] or \
            [r for r in result["group_norm"] if r["arch"] == arch]
        s = {"all_checks_pass": all(c["within_tolerance"] for r in rows for c in r["check"].values())}
        for pas in ("fwd", "bwd"):
            total = {impl: sum(r[impl][f"{pas}_ms"] * r["count"] for r in rows) for impl in ("eager", "compile", "ours")
                     if impl in rows[0]}
            s[f"{pas}_speedup_vs_eager"] = round(total["eager"] / total["ours"], 2)
            if "compile" in total:
                s[f"{pas}_speedup_vs_compile"] = round(total["compile"] / total["ours"], 2)
            s[f"{pas}_min_fraction_of_copy"] = min(r["fraction_of_copy_bandwidth"][pas] for r in rows)
            s[f"{pas}_min_speedup_vs_eager"] = min(r["speedup_vs_eager"][pas] for r in rows)
        s["goals_met"] = {p: s[f"{p}_speedup_vs_eager"] >= 2 and s[f"{p}_min_fraction_of_copy"] >= 0.7
                          for p in ("fwd", "bwd")}
        summary[arch] = s
    return summary


if __name__ == "__main__":
    main()
