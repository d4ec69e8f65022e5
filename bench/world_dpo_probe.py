"""Diffusion-DPO probes in the miniature world, outside the workflow (docs/world.md, the
probe tables of "AGFSync in the world" to "Fourth round"). Cheaper than a workflow run: the
candidates of N training prompts are drawn and scored once into a cache file, then each
training setting reuses them and measures gold (the oracle) on 300 held-out prompts of both
splits, with the paired bootstrap CI of agfsync.core.stats.

    python bench/world_dpo_probe.py pairs --stop 480 --out /tmp/cands_480.pt
    python bench/world_dpo_probe.py pairs --start 480 --stop 1200 --out /tmp/cands_1200_from480.pt
    python bench/world_dpo_probe.py base --out /tmp/base300.npy
    python bench/world_dpo_probe.py train --cands /tmp/cands_480.pt,/tmp/cands_1200_from480.pt \
        --base /tmp/base300.npy beta=500 steps=600 evals=300,600

Training settings (key=value): pick (judges | gold | clip), lr, beta, steps, batch, tmin,
tmax (timestep range), swap (1: winner and loser swapped), dpo and sft (weights of the DPO
loss and of a plain denoising loss on the winner), wd, clip (gradient norm), seed, evals
(steps at which to measure), n (use only the first n prompts of the cache), sched (constant, or
cosine: the rate decays to 0 over the steps, as the workflow's train.lr_schedule cosine).
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import numpy as np
import torch

DEFAULTS = dict(dpo=1.0, pick="judges", lr=2e-5, beta=5000.0, steps=300, batch=16, sft=0.0, tmin=0, tmax=1000,
                swap=0, evals="300", wd=0.0, seed=0, clip=1.0, n=0, sched="constant")


GEN_STEPS = [20]  # DDIM steps of every image the probe draws (--gen-steps)


def generator(models: Path, seed: int, n: int, sigma: float, keep_latents: bool = True):
    import dataclasses

    from agfsync.stages.candidates import CandidateGenerator
    from agfsync.world import check

    settings = check.model_settings(str(models / "sd1"))
    settings = dataclasses.replace(settings, generation=dataclasses.replace(settings.generation, steps=GEN_STEPS[0]))
    return CandidateGenerator("world", settings, seed=seed, num_per_prompt=n,
                              sigma=sigma, clean_first=False, pooled_noise="sigma", shared_latents=False,
                              keep_latents=keep_latents, attention="sdpa", device="cpu")


def training_prompts(start: int, stop: int) -> list[dict]:
    from agfsync.world import captions, questions, scenes
    from agfsync.world.data import rng_for
    from agfsync.world.grammar import CATEGORIES

    out = []
    for i in range(start, stop):
        rng = rng_for(11, "dpo-train", i)
        scene, _ = scenes.sample_scene(rng, CATEGORIES[i % 6], "seen")
        out.append({"id": f"t{i:04d}", "prompt": captions.caption(scene, rng), "qa": questions.questions(scene, rng),
                    "cat": CATEGORIES[i % 6]})
    return out


def draw_pairs(models: Path, start: int, stop: int, out: str) -> None:
    """8 candidates per prompt (seed 11, sigma 0.1), their judges' scores, gold and latents."""
    from agfsync.models.aesthetic import AestheticScorer
    from agfsync.models.clip_score import CLIPScorer
    from agfsync.models.loaders import load_aesthetic, load_blip2, load_clip
    from agfsync.models.vqa import VQAScorer
    from agfsync.world import oracle

    train = training_prompts(start, stop)
    g8 = generator(models, 11, 8, 0.1)
    vqa = VQAScorer(*load_blip2(str(models / "blip2"), device="cpu"))
    clip = CLIPScorer(*load_clip(str(models / "clip"), device="cpu"))
    aes = AestheticScorer(*load_aesthetic(str(models / "clip"), str(models / "aesthetic" / "head.pth"), device="cpu"))
    lat, v, c, a, g = [], [], [], [], []
    with torch.no_grad():
        for s in range(0, len(train), 10):
            batch = train[s:s + 10]
            _, images, latents = g8.generate(batch)
            for p, record in enumerate(batch):
                ims = [images[8 * p + k] for k in range(8)]
                v.append(np.asarray(vqa.score(ims, record["qa"])[0]))
                c.append(np.asarray(clip.score(ims, record["prompt"])))
                a.append(np.asarray(aes.score(ims)))
                g.append(np.array([oracle.accuracy(im, record["qa"]) for im in ims]))
                lat.append(torch.stack([torch.as_tensor(latents[8 * p + k]).float() for k in range(8)]))
        tok = g8.pipe.tokenizer
        ids = tok([r["prompt"] for r in train], padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        emb = g8.pipe.text_encoder(ids).last_hidden_state.float()
    torch.save({"lat": torch.stack(lat), "v": np.stack(v), "c": np.stack(c), "a": np.stack(a), "g": np.stack(g),
                "emb": emb, "cat": [r["cat"] for r in train]}, out)


def held_out_gold(g1, records) -> np.ndarray:
    from agfsync.world import oracle

    out = []
    with torch.no_grad():
        for s in range(0, len(records), 50):
            _, ims, _ = g1.generate(records[s:s + 50])
            out += [oracle.accuracy(im, r["qa"]) for im, r in zip(ims, records[s:s + 50])]
    return np.array(out)


def load_cands(files: list[str], n: int) -> dict:
    parts = [torch.load(f, weights_only=False) for f in files]  # our own cache files (numpy arrays inside)
    data = {}
    for key in parts[0]:
        first = parts[0][key]
        data[key] = (torch.cat([q[key] for q in parts]) if torch.is_tensor(first) else
                     np.concatenate([q[key] for q in parts]) if isinstance(first, np.ndarray) else
                     sum([q[key] for q in parts], []))
    return {k: v[:n] for k, v in data.items()} if n else data


def train(models: Path, files: list[str], base_path: str, o: dict) -> None:
    from diffusers import DDPMScheduler

    from agfsync.core import stats
    from agfsync.train.loss import diffusion_dpo_loss
    from agfsync.world import check
    from agfsync.world.gen import BETAS

    t0 = time.time()
    data = load_cands(files, o["n"])
    total = 0.35 * data["v"] + 0.55 * data["c"] + 0.10 * data["a"]
    total = {"judges": total, "gold": data["g"] + 1e-6 * total, "clip": data["c"]}[o["pick"]]
    order = np.argsort(-total, 1, kind="stable")
    rows = np.arange(len(total))
    w, lo = order[:, 0], order[:, 7]
    if o["swap"]:
        w, lo = lo, w
    lat_w, lat_l, emb = data["lat"][rows, w], data["lat"][rows, lo], data["emb"][rows]
    print(o, f"pairs {len(rows)} gold w {data['g'][rows, w].mean():.3f} l {data['g'][rows, lo].mean():.3f}", flush=True)
    g1 = generator(models, 1, 1, 0.0)
    pipe = g1.pipe
    unet = copy.deepcopy(pipe.unet).float().train()
    ref = copy.deepcopy(pipe.unet).float().eval().requires_grad_(False)
    base_unet = pipe.unet
    noise_scheduler = DDPMScheduler(**BETAS)
    opt = torch.optim.AdamW(unet.parameters(), lr=o["lr"], weight_decay=o["wd"])
    if o["sched"] not in ("constant", "cosine"):
        raise SystemExit(f"sched={o['sched']!r}: constant or cosine")
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, o["steps"]) if o["sched"] == "cosine" else None
    gen = torch.Generator().manual_seed(o["seed"])
    held = check.held_out_prompts(1, 300)
    base = np.load(base_path)
    evals = {int(x) for x in str(o["evals"]).split(",")}
    hist, B = [], o["batch"]
    for step in range(1, o["steps"] + 1):
        j = torch.randint(0, len(lat_w), (B,), generator=gen)
        xw, xl, e = lat_w[j], lat_l[j], emb[j]
        noise = torch.randn(xw.shape, generator=gen)
        t = torch.randint(o["tmin"], o["tmax"], (B,), generator=gen)
        nw, nl = noise_scheduler.add_noise(xw, noise, t), noise_scheduler.add_noise(xl, noise, t)
        pred = unet(torch.cat([nw, nl]), torch.cat([t, t]), torch.cat([e, e])).sample
        with torch.no_grad():
            rp = ref(torch.cat([nw, nl]), torch.cat([t, t]), torch.cat([e, e])).sample
        loss, m = diffusion_dpo_loss(pred[:B], pred[B:], rp[:B], rp[B:], noise, noise, o["beta"])
        loss = o["dpo"] * loss
        if o["sft"]:
            loss = loss + o["sft"] * (pred[:B] - noise).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), o["clip"])
        opt.step()
        if decay is not None:
            decay.step()
        hist.append([m["loss"].item(), m["implicit_acc"].item(), m["reward_margin"].item()])
        if step % 50 == 0:
            h = np.mean(hist[-50:], 0)
            print(f"step {step} loss {h[0]:.4f} acc {h[1]:.2f} margin {h[2]:.3f}", flush=True)
        if step in evals:
            pipe.unet = unet.eval()
            tuned = held_out_gold(g1, held)
            pipe.unet = base_unet
            unet.train()
            seen = np.array([r["split"] == "seen" for r in held])
            for name, mask in (("seen", seen), ("unseen", ~seen)):
                d = stats.paired_delta(base[mask], tuned[mask], seed=0)
                print(f"   {name}: base {base[mask].mean():.4f} tuned {tuned[mask].mean():.4f} "
                      f"{stats.describe(d, 100, 'points')}", flush=True)
            d = stats.paired_delta(base, tuned, seed=0)
            print(f"EVAL step {step}: base {base.mean():.4f} tuned {tuned.mean():.4f} {stats.describe(d, 100, 'points')}"
                  f" ({time.time() - t0:.0f}s)", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("pairs", "base", "train"))
    parser.add_argument("settings", nargs="*", help="train: key=value (see above)")
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("WORLD_MODELS", "data/world/models")))
    parser.add_argument("--start", type=int, default=0, help="pairs: the first training prompt")
    parser.add_argument("--stop", type=int, default=480, help="pairs: one past the last training prompt")
    parser.add_argument("--out", help="pairs: the cache file; base: the .npy of base gold")
    parser.add_argument("--cands", help="train: cache files, comma-separated")
    parser.add_argument("--base", help="train: the base model's gold (.npy of `base`)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gen-steps", type=int, default=20, help="DDIM steps of candidates and held-out images")
    args = parser.parse_intermixed_args(argv)
    GEN_STEPS[0] = args.gen_steps
    torch.set_num_threads(args.threads)
    if args.mode == "pairs":
        draw_pairs(args.models, args.start, args.stop, args.out)
    elif args.mode == "base":
        from agfsync.world import check

        np.save(args.out, held_out_gold(generator(args.models, 1, 1, 0.0), check.held_out_prompts(1, 300)))
    else:
        o = dict(DEFAULTS)
        for kv in args.settings:
            key, value = kv.split("=", 1)
            if key not in o:
                parser.error(f"unknown setting {key!r} (known: {', '.join(o)})")
            o[key] = type(o[key])(value)
        train(args.models, args.cands.split(","), args.base, o)


if __name__ == "__main__":
    main()
