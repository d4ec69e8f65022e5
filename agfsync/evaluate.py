"""Stage 6: evaluation images and their per-image scores, one shard at a time.

Images (rule eval_generate): one image per benchmark prompt and variant, `base` (the
pretrained model) or `agfsync` (the same pipeline with the fine-tuned UNet). Both use
the model's sampler, steps and guidance (models.<name>.generation) and the same seeds:
latents and sampler noise derive from (seed, "eval", benchmark) and the prompt id, never
from the variant, so the two images of a prompt differ only by the UNet. No embedding
noise. Shards are the candidate stage's tar files (agfsync.shards).

Per-image scores (rules eval_score_*), each written atomically:
  tifa   every TIFA question answered by the VQA model of scores.vqa (BLIP-2 flan-t5-xxl in
         the paper). TIFA maps a free-form answer to the nearest choice; we score the
         choices instead (agfsync.vqa fast path: yes/no by the yes/no logits, other
         questions by the choice with the highest likelihood), which never produces an
         off-list answer. Also the CLIP and aesthetic scores of the same image;
  hpsv2  HPS v2 score (agfsync.hps);
  mjhq   FID features (agfsync.fid), saved as .npz.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time

import numpy as np

from agfsync.ids import read_records
from agfsync.io import DataError, atomic_open, write_jsonl
from agfsync.seeds import derive_seed
from agfsync.shards import Shard

log = logging.getLogger(__name__)


def generation_config(cfg: dict, bench: str) -> dict:
    """The candidate generator's config for evaluation images: one clean image per prompt,
    seeds from (seed, "eval", bench) and the prompt id."""
    out = copy.deepcopy(cfg)
    out["seed"] = derive_seed(cfg["seed"], "eval", bench)
    out["candidates"] = {
        **cfg["candidates"], "num_per_prompt": 1, "sigma": 0.0, "clean_first": False, "pooled_noise": "none",
        "shared_latents": False, "keep_latents": False, "prompts_per_batch": cfg["eval"]["prompts_per_batch"],
    }
    return out


def generate_eval_shard(cfg: dict, model_name: str, bench: str, variant: str, records: list[dict], out_path,
                        *, unet=None, progress: bool = True) -> dict:
    from agfsync.candidates import generate_shard

    if variant not in ("base", "agfsync"):
        raise ValueError(f"unknown variant {variant!r} (expected 'base' or 'agfsync')")
    if (variant == "agfsync") != (unet is not None):
        raise ValueError(f"variant {variant!r}: the fine-tuned UNet is used exactly for 'agfsync'")
    rows = [{"id": r["id"], "prompt": r["prompt"], "category": r["group"]} for r in records]
    return generate_shard(generation_config(cfg, bench), model_name, rows, out_path, unet=unet, progress=progress,
                          row_extra={"variant": variant, "benchmark": bench})


def _by_id(prompts_path) -> dict[str, dict]:
    return {r["id"]: r for r in read_records(prompts_path, required=("id", "prompt", "group"))}


@contextlib.contextmanager
def _open(shard_path, prompts_path):
    """(shard, [(prompt record, manifest row)]) with every row's prompt checked; images are
    decoded one at a time by the caller (shard.image), never all at once."""
    records = _by_id(prompts_path)
    with Shard(shard_path) as shard:
        items = []
        for row in shard.rows:
            record = records.get(row["prompt_id"])
            if record is None:
                raise DataError(f"shard {shard_path}, record {row['prompt_id']}: not in {prompts_path}")
            items.append((record, row))
        yield shard, items


def score_tifa_shard(cfg: dict, shard_path, prompts_path, out_path, *, device=None, progress: bool = True) -> int:
    from tqdm import tqdm

    from agfsync.aesthetic import load_aesthetic_scorer
    from agfsync.clip_score import load_clip_scorer
    from agfsync.models import pick_device
    from agfsync.vqa import load_vqa_scorer

    started = time.perf_counter()
    rows = []
    with _open(shard_path, prompts_path) as (shard, items):
        if items:
            device = pick_device(device or cfg.get("device"))
            vqa = load_vqa_scorer({**cfg["scores"]["vqa"], "method": "fast"}, device=device)
            clip = load_clip_scorer(cfg["scores"]["clip"], device=device)
            aesthetic = load_aesthetic_scorer(cfg["scores"]["aesthetic"], device=device)
        for record, row in tqdm(items, desc=f"tifa {shard_path}", unit="image", disable=not progress, mininterval=2):
            image = shard.image(row)
            correct = vqa.correct([image], record["qa"])[0]
            rows.append({
                "prompt_id": record["id"], "group": record["group"],
                "correct": [bool(c) for c in correct], "element_types": [q["element_type"] for q in record["qa"]],
                "tifa": float(np.mean(correct)), "clip": float(clip.score([image], record["prompt"])[0]),
                "aesthetic": float(aesthetic.score([image])[0]), "seed": row["seed"],
            })
    write_jsonl(out_path, rows)
    log.info("eval tifa: %s: %d images in %.1f s", shard_path, len(rows), time.perf_counter() - started)
    return len(rows)


def score_hps_shard(cfg: dict, shard_path, prompts_path, out_path, *, device=None, progress: bool = True) -> int:
    from tqdm import tqdm

    from agfsync.hps import HPSScorer
    from agfsync.models import load_hps, pick_device

    section = cfg["eval"]["hpsv2"]
    started = time.perf_counter()
    rows = []
    with _open(shard_path, prompts_path) as (shard, items):
        if items:
            model, tokenizer, device = load_hps(section["model"], section["checkpoint"],
                                                device=pick_device(device or cfg.get("device")),
                                                model_config=section["model_config"])
            scorer = HPSScorer(model, tokenizer, device, section["version"])
        for record, row in tqdm(items, desc=f"hpsv2 {shard_path}", unit="image", disable=not progress, mininterval=2):
            score = scorer.score([shard.image(row)], record["prompt"])[0]
            rows.append({"prompt_id": record["id"], "group": record["group"], "hps": float(score), "seed": row["seed"]})
    write_jsonl(out_path, rows)
    log.info("eval hpsv2: %s: %d images in %.1f s", shard_path, len(rows), time.perf_counter() - started)
    return len(rows)


def save_features(out_path, ids: list[str], groups: list[str], features: np.ndarray, info: dict) -> None:
    import json

    with atomic_open(out_path, "wb", encoding=None) as handle:
        np.savez(handle, ids=np.asarray(ids, dtype=str), groups=np.asarray(groups, dtype=str),
                 features=np.asarray(features, dtype=np.float64), info=np.asarray(json.dumps(info, sort_keys=True)))


def load_features(path) -> dict:
    import json

    with np.load(path, allow_pickle=False) as data:
        return {"ids": [str(x) for x in data["ids"]], "groups": [str(x) for x in data["groups"]],
                "features": data["features"], "info": json.loads(str(data["info"]))}


def features_mjhq_shard(cfg: dict, shard_path, prompts_path, out_path, *, device=None) -> int:
    from agfsync.fid import extract, load_extractor
    from agfsync.models import pick_device

    features, info = np.zeros((0, 0)), {}
    with _open(shard_path, prompts_path) as (shard, items):
        if items:
            device = pick_device(device or cfg.get("device"))
            net, info = load_extractor(cfg["eval"]["mjhq"], device)
            features = extract((shard.image(row) for _, row in items), net, device, cfg["eval"]["mjhq"]["batch_size"])
    save_features(out_path, [r["id"] for r, _ in items], [r["group"] for r, _ in items], features, info)
    log.info("eval mjhq: %s: features of %d images", shard_path, len(items))
    return len(items)


def reference_images(zip_path, records: list[dict]):
    """The MJHQ reference image of each record, read from the images zip (members
    .../<id>.jpg|png), in record order."""
    import io
    import zipfile
    from pathlib import PurePosixPath

    from PIL import Image

    with zipfile.ZipFile(zip_path) as archive:
        members = {}
        for name in archive.namelist():
            path = PurePosixPath(name)
            if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                members[path.stem] = name
        for record in records:
            name = members.get(record["id"])
            if name is None:
                raise DataError(f"{zip_path}: no image for MJHQ id {record['id']} (category {record['group']})")
            with archive.open(name) as handle:
                yield Image.open(io.BytesIO(handle.read())).convert("RGB")


def features_mjhq_reference(cfg: dict, prompts_path, out_path, *, device=None) -> int:
    from tqdm import tqdm

    from agfsync.fid import extract, load_extractor
    from agfsync.models import pick_device

    records = read_records(prompts_path, required=("id", "group"))
    device = pick_device(device or cfg.get("device"))
    net, info = load_extractor(cfg["eval"]["mjhq"], device)
    images = tqdm(reference_images(cfg["eval"]["mjhq"]["images"], records), total=len(records), desc="mjhq reference",
                  unit="image", mininterval=2)
    features = extract(images, net, device, cfg["eval"]["mjhq"]["batch_size"])
    save_features(out_path, [r["id"] for r in records], [r["group"] for r in records], features, info)
    return len(records)
