"""Diffusion-DPO step: ours (agfsync.train.trainer.DPOTrainer: DeepSpeed engine, ZeRO, AdamW8bit,
accumulation, clipping) vs a plain PyTorch loop doing the same math (same UNet,
reference, pairs, noise, loss, AdamW8bit, accumulation, clipping). Prints seconds per
pair, peak memory (CUDA allocated on GPU, process RSS on CPU) and the overhead ratio.
Each variant runs in its own process so that peak memory is its own.

    python bench/dpo_step.py [--steps 10] [--micro-batch 2] [--global-batch 4]
    python bench/dpo_step.py --arch sdxl --resolution 1024 --micro-batch 1 --global-batch 2 \
        --checkpointing --attention sdpa|xformers [--kernels torch]   # on a GPU: real-sized UNet, random weights

Target (issue 4): overhead <= 1.15x on CPU tiny models; on a GPU, full SDXL DPO within
40 GB per GPU at micro-batch 1.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]


def peak_memory() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_config(pretrained: Path, args, model: str = "sd15") -> dict:
    """The paper config (config/config.yaml) with models.<model> at `pretrained` and the benchmark's settings."""
    from agfsync.core.config import load_config

    cfg = copy.deepcopy(load_config(ROOT / "config" / "config.yaml"))
    cfg["device"] = "auto"
    cfg["models"][model]["pretrained"] = str(pretrained)
    cfg["models"][model]["train"].update({"global_batch": args.global_batch, "micro_batch": args.micro_batch,
                                            "steps": 10**6, "lr": 1e-4})
    cfg["train"].update({"zero_stage": args.zero_stage, "gradient_checkpointing": args.checkpointing,
                         "lr_schedule": "constant", "optimizer": "adamw8bit", "precision": "auto",
                         "checkpoint_every": 10**6, "attention": args.attention, "kernels": args.kernels})
    return cfg


def real_sized_pretrained(arch: str, out: Path) -> Path:
    """A diffusers layout holding a randomly initialised real-sized UNet and the SD scheduler."""
    from diffusers import DDPMScheduler

    from architectures import build_unet

    torch.manual_seed(0)
    build_unet(arch).save_pretrained(out / "unet", safe_serialization=True)
    DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  num_train_timesteps=1000).save_pretrained(out / "scheduler")
    return out


def run_ours(settings, cache, steps, model="sd15") -> float:
    from agfsync.train.trainer import DPOTrainer

    trainer = DPOTrainer(settings, model, cache, tempfile.mkdtemp(), tempfile.mkdtemp())
    for micro in range(trainer.grad_accum):  # warm-up step
        trainer.micro_step(0, micro)
    sync()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        for micro in range(trainer.grad_accum):
            trainer.micro_step(step, micro)
    sync()
    return time.perf_counter() - start


def sync() -> None:
    """Wait for queued GPU work, so that the clock reads what ran between two points."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_plain(settings, cache_dir, steps, model="sd15") -> float:
    import bitsandbytes as bnb
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from agfsync.models.attention import configure_attention
    from agfsync.train.loss import diffusion_dpo_loss
    from agfsync.core.seeds import derive_seed
    from agfsync.train.data import PairCache, batch_indices

    hp, pretrained, train = settings.models[model].train, settings.models[model].pretrained, settings.train
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = device.type == "cuda"
    unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet").to(device).train()
    reference = copy.deepcopy(unet).to(torch.bfloat16 if autocast else torch.float32).requires_grad_(False).eval()
    if train.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    configure_attention(unet, train.attention, device)
    configure_attention(reference, train.attention, device)
    scheduler = DDPMScheduler.from_pretrained(pretrained, subfolder="scheduler")
    optimizer = bnb.optim.AdamW8bit(unet.parameters(), lr=hp.lr, weight_decay=0.01)
    cache = PairCache(cache_dir)
    accum = hp.global_batch // hp.micro_batch

    def step_fn(step):
        for micro in range(accum):
            batch = cache.get(batch_indices(settings.seed, len(cache), hp.global_batch, step, micro, 0, 1,
                                            hp.micro_batch))
            g = torch.Generator().manual_seed(derive_seed(settings.seed, "dpo", step, micro, 0))
            batch = {k: v.to(device) for k, v in batch.items()}
            x_w, x_l = batch["latents_w"], batch["latents_l"]
            noise = torch.randn(x_w.shape, generator=g).to(device)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (x_w.shape[0],), generator=g).to(device)
            noisy = torch.cat([scheduler.add_noise(x_w, noise, t), scheduler.add_noise(x_l, noise, t)])
            kwargs = {"encoder_hidden_states": batch["prompt_embeds"].repeat(2, 1, 1)}
            if "pooled" in batch:
                kwargs["added_cond_kwargs"] = {"text_embeds": batch["pooled"].repeat(2, 1),
                                               "time_ids": batch["time_ids"].repeat(2, 1)}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                pred = unet(noisy, torch.cat([t, t]), **kwargs).sample
                with torch.no_grad():
                    ref = reference(noisy, torch.cat([t, t]), **kwargs).sample
            b = x_w.shape[0]
            loss, _ = diffusion_dpo_loss(pred[:b], pred[b:], ref[:b].float(), ref[b:].float(), noise, noise,
                                         hp.beta_dpo)
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_fn(0)  # warm-up
    sync()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        step_fn(step)
    sync()
    return time.perf_counter() - start


def child(args) -> None:
    from agfsync.core.sections import Settings

    settings = Settings.from_json(Path(args.child_config).read_text())  # as the trainer reads its stage config
    seconds = (run_ours if args.variant == "ours" else run_plain)(settings, args.cache, args.steps, args.model)
    print(json.dumps({"seconds": seconds, "peak_memory_bytes": peak_memory()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating runs of each variant; medians are reported (timings on shared machines vary)")
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--arch", choices=["tiny", "sd15", "sdxl"], default="tiny",
                        help="tiny: agfsync tiny-models; sd15/sdxl: real-sized UNet with random weights (GPU)")
    parser.add_argument("--resolution", type=int, help="image size (default: 64 tiny, 512 sd15, 1024 sdxl)")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument("--attention", choices=["sdpa", "xformers", "auto"], default="sdpa")
    parser.add_argument("--kernels", choices=["auto", "triton", "torch"], default="auto",
                        help="train.kernels of ours (auto: Triton on a GPU); the plain loop always runs torch")
    parser.add_argument("--variant", choices=["ours", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="sd15", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return child(args)

    from common import save

    from agfsync.demo.toy import toy_cache
    from agfsync.demo.tiny_models import build_all

    work = Path(tempfile.mkdtemp())
    resolution = args.resolution or {"tiny": 64, "sd15": 512, "sdxl": 1024}[args.arch]
    if args.arch == "tiny":
        build_all(work / "tiny", families=("sd1",))
        pretrained = work / "tiny" / "sd1"
        cache = toy_cache(work / "cache", num_pairs=32)
    else:
        pretrained = real_sized_pretrained(args.arch, work / args.arch)
        sdxl = args.arch == "sdxl"
        cache = toy_cache(work / "cache", num_pairs=max(8, args.global_batch * 2), family="sdxl" if sdxl else "sd1",
                          latent_size=resolution // 8, embed_dim=2048 if sdxl else 768, pooled_dim=1280,
                          resolution=resolution)
    from agfsync.core.sections import Settings

    model = "sdxl" if args.arch == "sdxl" else "sd15"
    cfg = make_config(pretrained, args, model)
    (work / "cfg.json").write_text(Settings.from_dict(cfg).to_json())  # as the launcher writes the stage config
    samples = {"plain": [], "ours": []}
    for _ in range(args.repeats):
        for variant in ("plain", "ours"):
            out = subprocess.run([sys.executable, __file__, "--variant", variant, "--child-config",
                                  str(work / "cfg.json"), "--cache", str(cache), "--steps", str(args.steps),
                                  "--model", model],
                                 capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            samples[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    runs = {v: {"seconds": statistics.median(r["seconds"] for r in rs),
                "peak_memory_bytes": max(r["peak_memory_bytes"] for r in rs)} for v, rs in samples.items()}
    pairs = args.steps * args.global_batch
    result = {
        "benchmark": "Diffusion-DPO step on the tiny SD 1.x UNet: seconds per pair and peak memory",
        "settings": {k: v for k, v in vars(args).items() if k not in ("variant", "child_config", "cache")},
        "statistic": f"median of {args.repeats} alternating runs per variant",
        "plain_seconds_per_pair": round(runs["plain"]["seconds"] / pairs, 5),
        "ours_seconds_per_pair": round(runs["ours"]["seconds"] / pairs, 5),
        "overhead_ratio": round(runs["ours"]["seconds"] / runs["plain"]["seconds"], 3),
        "overhead_ratio_per_repeat": [round(o["seconds"] / p["seconds"], 3)
                                      for o, p in zip(samples["ours"], samples["plain"])],
        "target_ratio_at_most": 1.15,
        "plain_peak_memory_mb": round(runs["plain"]["peak_memory_bytes"] / 2**20, 1),
        "ours_peak_memory_mb": round(runs["ours"]["peak_memory_bytes"] / 2**20, 1),
        "peak_memory_kind": "cuda allocated" if torch.cuda.is_available() else "process RSS",
    }
    device = "gpu" if torch.cuda.is_available() else "cpu"
    name = f"dpo_step_{args.arch}_{resolution}_{device}" if args.arch != "tiny" else f"dpo_step_{device}"
    save(name + (f"_kernels-{args.kernels}" if args.kernels != "auto" else ""), result)


if __name__ == "__main__":
    main()
