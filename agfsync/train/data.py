"""Training data for Diffusion-DPO (rules train_cache and train_dpo).

train_cache computes, once, everything the trainer needs so that training never runs
the VAE or the text encoders:
  latents_w, latents_l  the winner's and loser's latents (scaled latent space of the UNet):
                        the final latents kept at generation time (train.latents =
                        generation), or the VAE encoding of the images (vae: posterior mean)
  prompt_embeds         text-encoder hidden states (SDXL: both encoders, concatenated)
  pooled, time_ids      SDXL only: pooled embedding and micro-conditioning
                        (original size, crop top-left, target size)
Chunks of `train.cache_chunk` pairs are safetensors files; index.json records their
sha256, checked when a chunk is first read, so a corrupt cache fails with the chunk and
record named instead of training on garbage.

Order: pair i of global step s is a pure function of (seed, s, i) through a seeded
permutation per epoch, so resuming at step s needs no replay of the data loader.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agfsync.core.ids import read_records
from agfsync.core.io import DataError, read_json, sha256_file, write_json
from agfsync.core.seeds import derive_seed

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

log = logging.getLogger(__name__)

KEYS_SD1 = ("latents_w", "latents_l", "prompt_embeds")
KEYS_SDXL = (*KEYS_SD1, "pooled", "time_ids")



# ----------------------------------------------------------------------------- building


def build_train_cache(settings: Settings, model_name: str, pairs_path, out_dir, *, device=None) -> dict:
    """Rule train_cache: encode every pair once into `out_dir` (index.json + chunks). Reads
    device, models.<model_name> (pretrained, revision, family, resolution), train.latents and
    train.cache_chunk."""
    import torch

    from agfsync.models.loaders import load_sd_pipeline, pick_device
    from agfsync.core.shards import Shard

    pairs = read_records(pairs_path, required=("prompt_id", "prompt", "winner", "loser"), key="prompt_id")
    if not pairs:
        raise DataError(f"{pairs_path}: no preference pairs (the file is empty); there is nothing to train on")
    model = settings.models[model_name]
    device = pick_device(device or settings.device)
    dtype = torch.float32
    pipe = load_sd_pipeline(model.pretrained, model.family, device=device, dtype=dtype, revision=model.revision)
    sdxl = model.family == "sdxl"
    resolution = model.resolution
    use_generation_latents = settings.train.latents == "generation"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards: dict[str, Shard] = {}

    def latent_of(side: dict) -> torch.Tensor:
        shard = shards.get(side["shard"]) or shards.setdefault(side["shard"], Shard(side["shard"]))
        row = next((r for r in shard.rows if r["image"] == side["image"]), None)
        if row is None:
            raise DataError(f"shard {side['shard']}: record {side['image']} listed in {pairs_path} is not in the shard")
        if use_generation_latents and row.get("latent"):
            return torch.from_numpy(shard.latent(row).astype(np.float32))
        image = np.asarray(shard.image(row), dtype=np.float32) / 127.5 - 1.0
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].to(device, dtype)
        with torch.no_grad():
            latent = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        return latent[0].float().cpu()

    chunk_size = settings.train.cache_chunk
    chunks = []
    for c in range(math.ceil(len(pairs) / chunk_size)):
        batch = pairs[c * chunk_size : (c + 1) * chunk_size]
        with torch.no_grad():
            if sdxl:
                embeds, _, pooled, _ = pipe.encode_prompt(
                    prompt=[p["prompt"] for p in batch], device=device, num_images_per_prompt=1,
                    do_classifier_free_guidance=False)
            else:
                embeds, _ = pipe.encode_prompt([p["prompt"] for p in batch], device, 1, False)
        tensors = {
            "latents_w": torch.stack([latent_of(p["winner"]) for p in batch]).half(),
            "latents_l": torch.stack([latent_of(p["loser"]) for p in batch]).half(),
            "prompt_embeds": embeds.float().cpu().half(),
        }
        if sdxl:
            tensors["pooled"] = pooled.float().cpu().half()
            tensors["time_ids"] = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * len(batch),
                                               dtype=torch.float32)
        chunks.append(save_chunk(out_dir, c, tensors))
    for shard in shards.values():
        shard.close()
    return write_index(out_dir, model_name, model.family, resolution, chunk_size, chunks,
                       [p["prompt_id"] for p in pairs], "generation" if use_generation_latents else "vae")


def save_chunk(out_dir, number: int, tensors: dict) -> dict:
    """Write one chunk atomically; return its index entry."""
    from safetensors.torch import save_file

    from agfsync.core.io import atomic_open

    name = f"chunk-{number:05d}.safetensors"
    with atomic_open(Path(out_dir) / name, "wb") as handle:
        handle.write(_serialize(tensors, save_file))
    count = len(next(iter(tensors.values())))
    log.info("train_cache: %s: %d pairs", name, count)
    return {"file": name, "count": count, "sha256": sha256_file(Path(out_dir) / name)}


def write_index(out_dir, model_name: str, family: str, resolution: int, chunk_size: int, chunks: list[dict],
                prompt_ids: list[str], latents: str) -> dict:
    index = {
        "model": model_name, "family": family, "resolution": resolution, "num_pairs": sum(c["count"] for c in chunks),
        "chunk_size": chunk_size, "chunks": chunks, "prompt_ids": prompt_ids, "latents": latents,
    }
    write_json(Path(out_dir) / "index.json", index)
    return index


def _serialize(tensors: dict, save_file) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "chunk.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        return Path(path).read_bytes()


# ----------------------------------------------------------------------------- reading


class PairCache:
    """Random access to the cached pairs; verifies each chunk once, keeps a few in memory."""

    def __init__(self, directory, keep_chunks: int = 4):
        self.dir = Path(directory)
        self.index = read_json(self.dir / "index.json")
        self.keys = KEYS_SDXL if self.index["family"] == "sdxl" else KEYS_SD1
        self.chunk_size = self.index["chunk_size"]
        if self.index["num_pairs"] == 0:
            raise DataError(f"train cache {self.dir}: holds no pairs")
        for chunk in self.index["chunks"]:
            if not (self.dir / chunk["file"]).exists():
                raise DataError(f"train cache {self.dir}: {chunk['file']} is missing; rebuild the cache")
        self._loaded: OrderedDict[int, dict] = OrderedDict()
        self._keep = keep_chunks

    def __len__(self) -> int:
        return self.index["num_pairs"]

    def _chunk(self, c: int) -> dict:
        if c in self._loaded:
            self._loaded.move_to_end(c)
            return self._loaded[c]
        import torch
        from safetensors.torch import load_file

        info = self.index["chunks"][c]
        path = self.dir / info["file"]
        if sha256_file(path) != info["sha256"]:
            raise DataError(f"train cache {path}: checksum mismatch (corrupt or changed); rebuild the cache")
        try:
            tensors = load_file(str(path))
        except Exception as err:
            raise DataError(f"train cache {path}: unreadable ({err}); rebuild the cache") from None
        missing = [k for k in self.keys if k not in tensors]
        if missing:
            raise DataError(f"train cache {path}: lacks {', '.join(missing)}")
        for k in self.keys:
            bad = (~torch.isfinite(tensors[k].float())).flatten(1).any(dim=1).nonzero().flatten().tolist()
            if bad:
                i = c * self.chunk_size + bad[0]
                raise DataError(f"train cache {path}, record {bad[0]} (pair {i}, prompt "
                                f"{self.index['prompt_ids'][i]}): non-finite values in {k}")
        self._loaded[c] = tensors
        if len(self._loaded) > self._keep:
            self._loaded.popitem(last=False)
        return tensors

    def get(self, indices: list[int]) -> dict:
        import torch

        rows = {k: [] for k in self.keys}
        for i in indices:
            chunk = self._chunk(i // self.chunk_size)
            for k in self.keys:
                rows[k].append(chunk[k][i % self.chunk_size])
        return {k: torch.stack(v).float() for k, v in rows.items()}


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_pairs: int) -> np.ndarray:
    return np.random.default_rng(derive_seed(seed, "train_order", epoch)).permutation(num_pairs)


def batch_indices(seed: int, num_pairs: int, global_batch: int, step: int, micro: int, rank: int, world: int,
                  micro_batch: int) -> list[int]:
    """Pairs of micro-batch `micro` on `rank` at optimizer step `step`: positions
    step * global_batch + (micro * world + rank) * micro_batch + j in the stream of
    per-epoch permutations. A pure function of its arguments: no loader state to replay."""
    start = step * global_batch + (micro * world + rank) * micro_batch
    out = []
    for position in range(start, start + micro_batch):
        epoch, offset = divmod(position, num_pairs)
        out.append(int(epoch_permutation(seed, epoch, num_pairs)[offset]))
    return out
