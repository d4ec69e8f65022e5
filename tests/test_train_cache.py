"""The train cache: latents kept at generation time, or the VAE encoding of the images."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from helpers import settings

from agfsync.core.sections import Settings
from agfsync.stages.candidates import generate_shard
from agfsync.core.shards import Shard
from agfsync.train.data import PairCache, build_train_cache

RECORDS = [{"id": f"animals-{i:010d}", "category": "Animals", "prompt": p}
           for i, p in enumerate(["a red fox in snow", "three ducklings on a pond"])]


@pytest.fixture
def shard_and_pairs(demo_config, tiny_models, tmp_path):
    cfg = copy.deepcopy(demo_config)
    cfg["models"]["sd15"]["pretrained"] = str(tiny_models / "sd1")
    cfg["candidates"].update({"num_per_prompt": 2, "attention": "sdpa"})
    shard = tmp_path / "shard-00000.tar"
    generate_shard(Settings.from_dict(cfg), "sd15", RECORDS, shard, progress=False)
    with Shard(shard) as s:
        rows = s.by_prompt()
    pairs = [{"prompt_id": r["id"], "prompt": r["prompt"],
              "winner": {"shard": str(shard), "image": rows[r["id"]][0]["image"]},
              "loser": {"shard": str(shard), "image": rows[r["id"]][1]["image"]}} for r in RECORDS]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return cfg, shard, rows, tmp_path / "pairs.jsonl"


def test_generation_latents_are_reused(shard_and_pairs, tmp_path):
    cfg, shard, rows, pairs = shard_and_pairs
    cfg["train"]["latents"] = "generation"
    index = build_train_cache(settings(cfg, "train_cache", model="sd15"), "sd15", pairs, tmp_path / "cache")
    assert (index["num_pairs"], index["latents"]) == (2, "generation")
    batch = PairCache(tmp_path / "cache").get([0, 1])
    with Shard(shard) as s:
        kept = np.stack([s.latent(rows[r["id"]][0]) for r in RECORDS]).astype(np.float32)
    assert np.array_equal(batch["latents_w"].numpy(), kept)
    assert batch["prompt_embeds"].shape == (2, 77, 32)


def test_vae_latents_are_the_posterior_mean_of_the_images(shard_and_pairs, tiny_models, tmp_path):
    from agfsync.models.loaders import load_sd_pipeline

    cfg, shard, rows, pairs = shard_and_pairs
    cfg["train"]["latents"] = "vae"
    build_train_cache(settings(cfg, "train_cache", model="sd15"), "sd15", pairs, tmp_path / "cache")
    batch = PairCache(tmp_path / "cache").get([0])
    pipe = load_sd_pipeline(str(tiny_models / "sd1"), "sd1", device="cpu")
    with Shard(shard) as s:
        image = np.asarray(s.image(rows[RECORDS[0]["id"]][1]), dtype=np.float32) / 127.5 - 1.0
    with torch.no_grad():
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None]
        expected = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    assert torch.allclose(batch["latents_l"], expected.half().float())
