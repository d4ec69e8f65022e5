"""Candidate generation: ours (all N candidates of a prompt in one UNet batch, several
prompts per batch) vs the authors' approach (one pipeline call per candidate), same
tiny model, prompts, seeds, steps and guidance. Prints images/s and the ratio.

    python bench/candidates.py [--family sd1|sdxl] [--prompts 4] [--resolution 64] [--steps 8]

Target (issue 3): >= 1.5x on CPU tiny models.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_of, save  # noqa: E402

from agfsync.core.sections import Settings  # noqa: E402
from agfsync.stages.candidates import CandidateGenerator, candidate_seeds, gaussian, perturb  # noqa: E402
from agfsync.core.config import load_config  # noqa: E402
from agfsync.core.seeds import derive_seed  # noqa: E402
from agfsync.demo.tiny_models import build_all  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red fox curled up in fresh snow", "three ducklings on a calm pond", "a yellow tram on a cobbled street",
           "a bonsai pine in a blue ceramic pot", "a surfer riding a large blue wave", "a lighthouse above a harbor"]


def per_candidate_loop(gen: CandidateGenerator, records: list[dict]) -> None:
    """The authors' approach: one pipeline call (batch 1, CFG) per candidate."""
    n, sigma, seed = gen.num_per_prompt, gen.sigma, gen.seed
    res = gen.model.resolution
    shape = (gen.pipe.unet.config.in_channels, res // gen.pipe.vae_scale_factor, res // gen.pipe.vae_scale_factor)
    for record in records:
        cond, uncond, pooled, neg_pooled = gen.encode([record["prompt"]])
        for k in range(n):
            seeds = candidate_seeds(seed, record["id"], k)
            kwargs = dict(
                prompt_embeds=perturb(cond[0], sigma, seeds.noise, False)[None], negative_prompt_embeds=uncond,
                latents=gaussian(shape, seeds.latent)[None].to(gen.device, gen.pipe.unet.dtype),
                generator=torch.Generator(gen.device).manual_seed(seeds.sampler),
                num_inference_steps=gen.generation.steps, guidance_scale=gen.cfg_scale, height=res, width=res,
                output_type="latent",
            )
            if gen.sdxl:
                kwargs.update(pooled_prompt_embeds=perturb(pooled[0], sigma, derive_seed(seed, "pooled_noise", record["id"], k), False)[None],
                              negative_pooled_prompt_embeds=neg_pooled)
            gen.decode(gen.pipe(**kwargs).images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["sd1", "sdxl"], default="sd1")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts-per-batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", help="tiny models dir (built into a temp dir if not given)")
    args = parser.parse_args()

    models_dir = Path(args.models) if args.models else Path(tempfile.mkdtemp()) / "tiny"
    if not args.models:
        build_all(models_dir, families=(args.family,))
    cfg = copy.deepcopy(load_config(ROOT / "config" / "config.yaml"))  # the paper config, models sd15 and sdxl
    name = "sd15" if args.family == "sd1" else "sdxl"
    cfg["models"][name]["pretrained"] = str(models_dir / args.family)
    cfg["models"][name]["resolution"] = args.resolution
    cfg["models"][name]["generation"]["steps"] = args.steps
    cfg["candidates"].update({"prompts_per_batch": args.prompts_per_batch, "attention": "sdpa"})
    settings = Settings.from_dict(cfg)
    gen = CandidateGenerator.from_settings(name, settings.models[name], settings.candidates, seed=settings.seed,
                                           device=settings.device)
    records = [{"id": f"bench-{i:010d}", "prompt": PROMPTS[i % len(PROMPTS)]} for i in range(args.prompts)]
    images = args.prompts * cfg["candidates"]["num_per_prompt"]

    def ours():
        for i in range(0, len(records), args.prompts_per_batch):
            gen.generate(records[i : i + args.prompts_per_batch])

    baseline_s = best_of(lambda: per_candidate_loop(gen, records), args.repeats)
    ours_s = best_of(ours, args.repeats)
    result = {
        "benchmark": "candidate generation, images/s",
        "settings": {**vars(args), "num_per_prompt": cfg["candidates"]["num_per_prompt"],
                     "guidance_scale": cfg["models"][name]["generation"]["guidance_scale"]},
        "baseline_per_candidate_images_per_s": round(images / baseline_s, 2),
        "ours_batched_images_per_s": round(images / ours_s, 2),
        "ratio": round(baseline_s / ours_s, 2),
        "target_ratio": 1.5,
    }
    save(f"candidates_{args.family}_cpu" if not torch.cuda.is_available() else f"candidates_{args.family}_gpu", result)


if __name__ == "__main__":
    main()
