"""Diffusion-DPO step: ours (agfsync.train.DPOTrainer: DeepSpeed engine, ZeRO, AdamW8bit,
accumulation, clipping) vs a plain PyTorch loop doing the same math (same UNet,
reference, pairs, noise, loss, AdamW8bit, accumulation, clipping). Prints seconds per
pair, peak memory (CUDA allocated on GPU, process RSS on CPU) and the overhead ratio.
Each variant runs in its own process so that peak memory is its own.

    python bench/dpo_step.py [--steps 10] [--micro-batch 2] [--global-batch 4]

Target (issue 4): overhead <= 1.15x on CPU tiny models.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
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


def make_config(models: Path, args) -> dict:
    from agfsync.config import load_config

    cfg = copy.deepcopy(load_config(ROOT / "config" / "demo.yaml"))
    cfg["models"]["sd15"]["pretrained"] = str(models / "sd1")
    cfg["models"]["sd15"]["train"].update({"global_batch": args.global_batch, "micro_batch": args.micro_batch,
                                            "steps": 10**6, "lr": 1e-4})
    cfg["train"].update({"zero_stage": args.zero_stage, "gradient_checkpointing": False, "lr_schedule": "constant",
                         "optimizer": "adamw8bit", "precision": "fp32", "checkpoint_every": 10**6})
    return cfg


def run_ours(cfg, cache, steps) -> float:
    from agfsync.train import DPOTrainer

    trainer = DPOTrainer(cfg, "sd15", cache, tempfile.mkdtemp(), tempfile.mkdtemp())
    for micro in range(trainer.grad_accum):  # warm-up step
        trainer.micro_step(0, micro)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        for micro in range(trainer.grad_accum):
            trainer.micro_step(step, micro)
    return time.perf_counter() - start


def run_plain(cfg, cache_dir, steps) -> float:
    import bitsandbytes as bnb
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from agfsync.dpo import diffusion_dpo_loss
    from agfsync.seeds import derive_seed
    from agfsync.train_data import PairCache, batch_indices

    hp, pretrained = cfg["models"]["sd15"]["train"], cfg["models"]["sd15"]["pretrained"]
    unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet").train()
    reference = copy.deepcopy(unet).requires_grad_(False).eval()
    scheduler = DDPMScheduler.from_pretrained(pretrained, subfolder="scheduler")
    optimizer = bnb.optim.AdamW8bit(unet.parameters(), lr=hp["lr"], weight_decay=0.01)
    cache = PairCache(cache_dir)
    accum = hp["global_batch"] // hp["micro_batch"]

    def step_fn(step):
        for micro in range(accum):
            batch = cache.get(batch_indices(cfg["seed"], len(cache), hp["global_batch"], step, micro, 0, 1,
                                            hp["micro_batch"]))
            g = torch.Generator().manual_seed(derive_seed(cfg["seed"], "dpo", step, micro, 0))
            x_w, x_l = batch["latents_w"], batch["latents_l"]
            noise = torch.randn(x_w.shape, generator=g)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (x_w.shape[0],), generator=g)
            noisy = torch.cat([scheduler.add_noise(x_w, noise, t), scheduler.add_noise(x_l, noise, t)])
            emb = batch["prompt_embeds"].repeat(2, 1, 1)
            pred = unet(noisy, torch.cat([t, t]), encoder_hidden_states=emb).sample
            with torch.no_grad():
                ref = reference(noisy, torch.cat([t, t]), encoder_hidden_states=emb).sample
            b = x_w.shape[0]
            loss, _ = diffusion_dpo_loss(pred[:b], pred[b:], ref[:b], ref[b:], noise, noise, hp["beta_dpo"])
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_fn(0)  # warm-up
    start = time.perf_counter()
    for step in range(1, steps + 1):
        step_fn(step)
    return time.perf_counter() - start


def child(args) -> None:
    cfg = json.loads(Path(args.child_config).read_text())
    seconds = (run_ours if args.variant == "ours" else run_plain)(cfg, args.cache, args.steps)
    print(json.dumps({"seconds": seconds, "peak_memory_bytes": peak_memory()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--variant", choices=["ours", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return child(args)

    from common import save

    from agfsync.testing import toy_cache
    from agfsync.tiny_models import build_all

    work = Path(tempfile.mkdtemp())
    build_all(work / "tiny", families=("sd1",))
    cache = toy_cache(work / "cache", num_pairs=32)
    cfg = make_config(work / "tiny", args)
    (work / "cfg.json").write_text(json.dumps(cfg))
    runs = {}
    for variant in ("plain", "ours"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--child-config", str(work / "cfg.json"),
                              "--cache", str(cache), "--steps", str(args.steps)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if out.returncode != 0:
            raise SystemExit(out.stderr[-3000:])
        runs[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    pairs = args.steps * args.global_batch
    result = {
        "benchmark": "Diffusion-DPO step on the tiny SD 1.x UNet: seconds per pair and peak memory",
        "settings": {k: v for k, v in vars(args).items() if k not in ("variant", "child_config", "cache")},
        "plain_seconds_per_pair": round(runs["plain"]["seconds"] / pairs, 5),
        "ours_seconds_per_pair": round(runs["ours"]["seconds"] / pairs, 5),
        "overhead_ratio": round(runs["ours"]["seconds"] / runs["plain"]["seconds"], 3),
        "target_ratio_at_most": 1.15,
        "plain_peak_memory_mb": round(runs["plain"]["peak_memory_bytes"] / 2**20, 1),
        "ours_peak_memory_mb": round(runs["ours"]["peak_memory_bytes"] / 2**20, 1),
        "peak_memory_kind": "cuda allocated" if torch.cuda.is_available() else "process RSS",
    }
    save("dpo_step_cpu" if not torch.cuda.is_available() else "dpo_step_gpu", result)


if __name__ == "__main__":
    main()
