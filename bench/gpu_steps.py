"""The four measurements of bench/gpu.sh, one function each.

bench/gpu.py runs each in its own process with its own time budget; a step calls
`record(**fields)` as soon as a number exists (written to disk at once), so a step stopped
at its budget or by an error still leaves what it had measured. With `smoke` every step
runs on the CPU with the tiny models of `agfsync tiny-models` (kernels through the Triton
interpreter): that checks the script, its timings mean nothing.

1. kernels     GroupNorm(+SiLU) and the DPO loss: bench/kernels.py's rows (real SD1.5 and SDXL
               shapes, bf16, NCHW and channels_last, eager / torch.compile / ours, float64 checks)
2. generation  real-sized SD1.5 (512 px) and SDXL (1024 px) pipelines with random weights,
               loaded by agfsync's CandidateGenerator as the candidates stage loads a checkpoint
3. dpo         agfsync's DPOTrainer (DeepSpeed ZeRO-2, 8-bit AdamW, gradient checkpointing,
               bf16 reference on the GPU) on real-sized UNets, kernels on and off
4. vqa         a BLIP-2 flan-t5-xxl-sized model: our fast path vs one generate() per question
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROMPT = "a red circle left of two small blue squares on a grey background"
# the paper config's models (config/config.yaml) measured here, by architecture
MODELS = {"sd15": "sd15", "sdxl": "sdxl"}
TINY_FAMILY = {"sd15": "sd1", "sdxl": "sdxl"}


def bench_module(name: str):
    """bench/<name>.py, loaded by path (bench/ stays off sys.path: its kernels.py would shadow the
    `kernels` package that bitsandbytes probes for)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def timed(fn, device, repeats: int) -> float:
    """Median wall seconds of `repeats` calls (after the caller's warm-up)."""
    import statistics

    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_tflops(device, smoke: bool) -> float:
    """Dense bf16 matrix product rate (the ceiling of compute-bound work), measured here."""
    import torch

    n = 256 if smoke else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b
    seconds = timed(lambda: a @ b, device, 3 if smoke else 10)
    return 2 * n**3 / seconds / 1e12


# ------------------------------------------------------------------------------------------ 1. kernels

def kernels(record, smoke: bool, device) -> None:
    import torch

    from agfsync.train.kernels.self_check import check_kernels

    km = bench_module("kernels")
    record(self_check_error_ratios=check_kernels(device))  # the start-up check: float64 on this device
    if device.type == "cuda":
        from triton.testing import do_bench

        timer = lambda fn: float(do_bench(fn, warmup=10, rep=40, return_mode="median"))  # noqa: E731
    else:
        timer = km.Timer(device, smoke)
    autocast = device.type == "cuda"
    copy_gbs = km.copy_bandwidth(device, timer, smoke)
    record(copy_bandwidth_gbs=round(copy_gbs, 1))
    tiny = None
    archs = ["sdxl", "sd15"]
    if smoke:
        from agfsync.demo.tiny_models import sd1_unet

        torch.manual_seed(0)
        tiny, archs = sd1_unet(), ["sd15"]
    losses = []
    for arch in archs:  # the DPO loss first: a few calls, cheap to compile
        latent = tiny.config.sample_size if tiny is not None else km.ARCHS[arch]["latent"]
        losses.append(km.bench_dpo_loss(arch, latent, 1, device, timer, not smoke, autocast))
        record(dpo_loss=losses)
    rows_out = []
    for arch in archs:
        rows = km.group_norm_rows(arch, tiny)
        # heaviest first (calls x elements), so that a step stopped at its budget has measured what matters
        rows.sort(key=lambda r: -r["count"] * r["shape"][1] * r["shape"][2] * r["shape"][3])
        if smoke:
            rows = [next(r for r in rows if r["silu"]), next(r for r in rows if not r["silu"])]
        # torch.compile (a minute of inductor per few shapes) on the heaviest row; channels_last on the two heaviest
        plan = [(row, "nchw", i == 0 and not smoke) for i, row in enumerate(rows)]
        plan[2:2] = [(row, "channels_last", False) for row in rows[:2]]
        for row, layout, compile_ in plan:
            r = km.bench_group_norm(row, layout, device, timer, copy_gbs, compile_, autocast)
            rows_out.append({"arch": arch, **r})
            record(group_norm=rows_out, summary=summarise(rows_out))


def summarise(rows: list[dict]) -> dict:
    """Per arch and layout: eager / ours over all of the UNet's GroupNorm calls (each row x its count),
    the slowest row against copy bandwidth, torch.compile over the rows where it was measured."""
    out = {}
    for arch in sorted({r["arch"] for r in rows}):
        for layout in ("nchw", "channels_last"):
            sel = [r for r in rows if r["arch"] == arch and r["layout"] == layout]
            if not sel:
                continue
            s = {"rows": len(sel), "all_checks_pass": all(c["within_tolerance"] for r in sel for c in r["check"].values())}
            for p in ("fwd", "bwd"):
                eager = sum(r["eager"][f"{p}_ms"] * r["count"] for r in sel)
                ours = sum(r["ours"][f"{p}_ms"] * r["count"] for r in sel)
                s[f"{p}_speedup_vs_eager"] = round(eager / ours, 2)
                s[f"{p}_min_fraction_of_copy"] = min(r["fraction_of_copy_bandwidth"][p] for r in sel)
                compiled = [r for r in sel if "compile" in r]
                if compiled:
                    s[f"{p}_speedup_vs_compile"] = round(sum(r["compile"][f"{p}_ms"] * r["count"] for r in compiled)
                                                         / sum(r["ours"][f"{p}_ms"] * r["count"] for r in compiled), 2)
            s["goals_met"] = {p: s[f"{p}_speedup_vs_eager"] >= 2 and s[f"{p}_min_fraction_of_copy"] >= 0.7
                              for p in ("fwd", "bwd")}
            out[f"{arch}/{layout}"] = s
    return out


# --------------------------------------------------------------------------------------- 2. generation

def _settings(overrides) -> object:
    """The paper config (config/config.yaml) with `overrides(cfg)` applied, as the stages read it."""
    from agfsync.core.config import load_config
    from agfsync.core.sections import Settings

    cfg = copy.deepcopy(load_config(ROOT / "config" / "config.yaml"))
    overrides(cfg)
    return Settings.from_dict(cfg)


def generation(record, smoke: bool, device) -> None:
    import torch

    from agfsync.stages.candidates import CandidateGenerator

    arch_mod = bench_module("architectures")
    ceiling_tflops = matmul_tflops(device, smoke)
    record(matmul_bf16_tflops=round(ceiling_tflops, 1))
    work = Path(tempfile.mkdtemp(prefix="agfsync-gpu-gen-"))
    if smoke:
        from agfsync.demo.tiny_models import build_all

        build_all(work / "tiny", families=("sd1", "sdxl"))
    results = {}
    for arch in ("sd15", "sdxl"):
        name, start = MODELS[arch], time.perf_counter()
        if smoke:
            pretrained, resolution = work / "tiny" / TINY_FAMILY[arch], 64
        else:
            pretrained, resolution = work / arch, arch_mod.RESOLUTION[arch]
            arch_mod.build_pipeline(arch, pretrained, device=device, dtype=torch.bfloat16)
            torch.cuda.empty_cache()

        def overrides(cfg, pretrained=pretrained, resolution=resolution, name=name):
            m = cfg["models"][name]
            m.update(pretrained=str(pretrained), resolution=resolution)
            if smoke:
                m["generation"]["steps"] = 2
            cfg["candidates"]["attention"] = "sdpa"
            cfg["device"] = device.type

        settings = _settings(overrides)
        model = settings.models[name]
        gen = CandidateGenerator.from_settings(name, model, settings.candidates, seed=settings.seed, device=device)
        setup_s = time.perf_counter() - start
        records = [{"id": "gpu-bench-0000000000", "prompt": PROMPT}]
        reset_peak(device)
        gen.generate(records)  # warm-up
        seconds = timed(lambda: gen.generate(records), device, 1 if smoke else 3)
        n = settings.candidates.num_per_prompt
        # the ceiling: the UNet's and VAE decoder's FLOPs (counted on the meta device) at the measured matmul rate
        unet_flops = _unet_flops(gen.pipe.unet, resolution // 8)
        vae_flops = _vae_decode_flops(gen.pipe.vae, resolution // 8)
        cfg_factor = 2 if model.generation.guidance_scale > 1 else 1
        per_image = model.generation.steps * cfg_factor * unet_flops + vae_flops
        ceiling = ceiling_tflops * 1e12 / per_image
        results[arch] = {
            "model": name, "resolution": resolution, "steps": model.generation.steps,
            "scheduler": model.generation.scheduler, "guidance_scale": model.generation.guidance_scale,
            "candidates_per_batch": n, "dtype": str(gen.pipe.unet.dtype).removeprefix("torch."),
            "attention": str(gen.attention), "setup_s": round(setup_s, 1), "seconds_per_batch": round(seconds, 3),
            "images_per_s": round(n / seconds, 3), "unet_tflop_per_forward": round(unet_flops / 1e12, 3),
            "vae_decode_tflop": round(vae_flops / 1e12, 3), "ceiling_images_per_s": round(ceiling, 2),
            "fraction_of_ceiling": round(n / seconds / ceiling, 3), "peak_gib": peak_gib(device),
        }
        record(generation=results)
        del gen
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if not smoke:
            shutil.rmtree(pretrained, ignore_errors=True)  # ~2 GB (SD1.5) and ~7 GB (SDXL) of bf16 weights
    shutil.rmtree(work, ignore_errors=True)


def _on_meta(model):
    """The same architecture on the meta device (from its config: no copy of the weights)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return type(model).from_config(model.config)


def _unet_flops(unet, latent: int) -> int:
    import torch

    meta = _on_meta(unet)
    cfg = meta.config
    with torch.device("meta"):
        kw = {"encoder_hidden_states": torch.randn(1, 77, cfg.cross_attention_dim)}
        if cfg.addition_embed_type == "text_time":
            pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            kw["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled), "time_ids": torch.randn(1, 6)}
        return bench_module("architectures").flops(meta, torch.randn(1, cfg.in_channels, latent, latent),
                                                   torch.tensor([500]), **kw)


def _vae_decode_flops(vae, latent: int) -> int:
    import torch

    meta = _on_meta(vae)
    with torch.device("meta"):
        return bench_module("architectures").flops(meta.decode, torch.randn(1, meta.config.latent_channels, latent, latent))


# ---------------------------------------------------------------------------------------------- 3. dpo

def dpo_pretrained(arch: str, work: Path, device, smoke: bool) -> Path:
    """A folder with unet/ and scheduler/ for the trainer: the tiny SD 1.x model (smoke), or the
    real-sized `arch` UNet with random weights, drawn on `device` and saved in bf16."""
    import torch

    if smoke:
        from agfsync.demo.tiny_models import build_all

        build_all(work / "tiny", families=("sd1",))
        return work / "tiny" / "sd1"
    from diffusers import DDPMScheduler

    pretrained = work / arch
    torch.manual_seed(0)
    with torch.device(device):
        unet = bench_module("architectures").build_unet(arch).to(torch.bfloat16)  # the trainer loads fp32
    unet.save_pretrained(pretrained / "unet", safe_serialization=True)
    del unet
    torch.cuda.empty_cache()
    DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  num_train_timesteps=1000).save_pretrained(pretrained / "scheduler")
    return pretrained


def dpo(record, smoke: bool, device) -> None:
    import torch

    from agfsync.core.sections import Settings
    from agfsync.demo.toy import toy_cache

    dpo_step = bench_module("dpo_step")
    work = Path(tempfile.mkdtemp(prefix="agfsync-gpu-dpo-"))
    steps = 2 if smoke else 4
    plan = [("sd15", 64, ["torch"])] if smoke else [("sdxl", 1024, ["triton", "torch"]), ("sd15", 512, ["triton", "torch"])]
    runs = []
    for arch, resolution, kernel_modes in plan:
        pretrained = dpo_pretrained(arch, work, device, smoke)
        sdxl = arch == "sdxl"
        cache = toy_cache(work / f"cache-{arch}", num_pairs=8, family="sdxl" if sdxl else "sd1",
                          latent_size=resolution // 8, embed_dim=2048 if sdxl else (None if smoke else 768),
                          pooled_dim=1280, resolution=resolution)
        for mode in kernel_modes:
            args = SimpleNamespace(global_batch=1, micro_batch=1, zero_stage=2, checkpointing=True,
                                   attention="sdpa", kernels=mode)
            cfg = dpo_step.make_config(pretrained, args, model=arch)
            cfg["device"] = device.type
            cfg_path = work / f"cfg-{arch}-{mode}.json"
            cfg_path.write_text(Settings.from_dict(cfg).to_json())
            start = time.perf_counter()
            out = subprocess.run([sys.executable, str(HERE / "dpo_step.py"), "--variant", "ours", "--child-config",
                                  str(cfg_path), "--cache", str(cache), "--steps", str(steps), "--model", arch],
                                 capture_output=True, text=True)
            run = {"arch": arch, "resolution": resolution, "kernels": mode, "micro_batch": 1, "global_batch": 1,
                   "zero_stage": 2, "optimizer": cfg["train"]["optimizer"], "gradient_checkpointing": True,
                   "attention": "sdpa", "steps_timed": steps, "wall_s": round(time.perf_counter() - start, 1)}
            if out.returncode != 0:
                run["error"] = out.stderr[-2000:]
            else:
                child = json.loads(out.stdout.strip().splitlines()[-1])
                run["seconds_per_pair"] = round(child["seconds"] / steps, 4)
                run["peak_gib"] = round(child["peak_memory_bytes"] / 2**30, 2)
                run["peak_kind"] = "cuda max allocated" if device.type == "cuda" else "process max RSS"
                params = run["unet_parameters"] = unet_parameters(pretrained / "unet")
                # ZeRO-2 on 8 GPUs shards the fp32 master partition (4 B), the fp32 gradients (4 B) and the
                # 8-bit Adam states (2 B) per parameter; the fp32 module weights and the bf16 reference stay whole
                run["estimated_peak_gib_8_gpus_zero2"] = round(run["peak_gib"] - 10 * params * 7 / 8 / 2**30, 2)
            runs.append(run)
            record(runs=runs)
        shutil.rmtree(pretrained, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    by = {(r["arch"], r["kernels"]): r for r in runs if "seconds_per_pair" in r}
    gains = {arch: round(by[arch, "torch"]["seconds_per_pair"] / by[arch, "triton"]["seconds_per_pair"], 3)
             for arch in ("sd15", "sdxl") if (arch, "torch") in by and (arch, "triton") in by}
    record(kernels_speedup=gains)


def unet_parameters(folder: Path) -> int:
    """Parameters of a saved UNet, from its safetensors headers."""
    import math

    from safetensors import safe_open

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "pt") as f:
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return total


# ---------------------------------------------------------------------------------------------- 4. vqa

def vqa(record, smoke: bool, device) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from agfsync.models.vqa import VQAScorer

    start = time.perf_counter()
    if smoke:
        from agfsync.demo.tiny_models import build_all
        from agfsync.models.loaders import load_blip2

        work = Path(tempfile.mkdtemp(prefix="agfsync-gpu-vqa-"))
        build_all(work / "tiny", families=("blip2",))
        model, processor, device = load_blip2(str(work / "tiny" / "blip2"), device=device)
        shutil.rmtree(work, ignore_errors=True)
        size, arch = 64, "tiny BLIP-2 (agfsync tiny-models)"
    else:
        from transformers import Blip2Processor, BlipImageProcessor

        from agfsync.demo.tiny_models import build_t5_tokenizer

        arch_mod = bench_module("architectures")
        processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 224, "width": 224}),
                                   tokenizer=build_t5_tokenizer(), num_query_tokens=arch_mod.BLIP2_QUERY_TOKENS)
        model = arch_mod.build_blip2_xxl(processor, device=device, dtype=torch.bfloat16)
        size, arch = 512, "BLIP-2 flan-t5-xxl sized, random weights"
    params = sum(p.numel() for p in model.parameters())
    record(model=arch, parameters=params, dtype=str(model.dtype).removeprefix("torch."),
           setup_s=round(time.perf_counter() - start, 1))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(8)]
    qa = [{"question": q, "choices": ["yes", "no"], "answer": "yes"} for q in (
        "is there a circle?", "is the circle red?", "are there two squares?", "are the squares blue?",
        "is the circle left of the squares?", "are the squares small?", "is the background grey?", "is this a photo?")]
    fast = VQAScorer(model, processor, device, method="fast")
    slow = VQAScorer(model, processor, device).generate_answers
    n = len(images) * len(qa)
    reset_peak(device)
    with torch.no_grad():
        fast.answer(images[:1], qa[:1])  # warm-up
        fast_s = timed(lambda: fast.answer(images, qa), device, 1 if smoke else 3)
        record(questions=n, fast_seconds=round(fast_s, 4), fast_questions_per_s=round(n / fast_s, 1))
        slow(images[:1], qa[:1])
        slow_s = timed(lambda: slow(images, qa), device, 1)
    record(generate_seconds=round(slow_s, 4), generate_questions_per_s=round(n / slow_s, 2),
           ratio=round(slow_s / fast_s, 2), peak_gib=peak_gib(device))


STEPS = {"kernels": kernels, "generation": generation, "dpo": dpo, "vqa": vqa}


def imported_distributions() -> list[str]:
    """The installed distributions whose modules this process imported (what the GPU image must have
    or the carried wheels bring); bench/gpu_wheels.sh's list is checked against it by the tests."""
    from importlib.metadata import packages_distributions

    top = {name.split(".")[0] for name in list(sys.modules)}
    mapping = packages_distributions()
    return sorted({dist for name in top for dist in mapping.get(name, [])})


def run_step(name: str, out: Path, smoke: bool) -> None:
    """Run one step in this process, writing out/step-<name>.json after every record()."""
    if smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported
    import torch

    path = out / f"step-{name}.json"
    data: dict = {}

    def record(**fields) -> None:
        data.update(fields)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, path)

    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    record(device=str(device))
    try:
        STEPS[name](record, smoke, device)
    finally:
        record(imported_distributions=imported_distributions())
