"""Stage 3, rule candidates_score: AI feedback for every candidate of one shard.

Per image: VQA score (BLIP-2, the prompt's QA pairs), CLIP score and aesthetic score,
each on 0..100, and the weighted total (scores.weights; paper 0.35 / 0.55 / 0.10).
Output: one JSONL row per image with all sub-scores, the total and the per-question
correctness, written atomically.
"""

from __future__ import annotations

import logging
import time

from agfsync.ids import read_records
from agfsync.io import DataError, write_jsonl
from agfsync.pairs import weighted_total

log = logging.getLogger(__name__)


def score_shard(cfg: dict, shard_path, qa_path, out_path, *, device=None, progress: bool = True) -> dict:
    from tqdm import tqdm

    from agfsync.aesthetic import load_aesthetic_scorer
    from agfsync.clip_score import load_clip_scorer
    from agfsync.models import pick_device
    from agfsync.shards import Shard
    from agfsync.vqa import load_vqa_scorer

    started = time.perf_counter()
    qa = {r["id"]: r for r in read_records(qa_path, required=("id", "prompt", "qa"))}  # ids checked, unique
    weights = cfg["scores"]["weights"]
    rows = []
    with Shard(shard_path) as shard:
        groups = shard.by_prompt()
        if groups:
            device = pick_device(device or cfg.get("device"))
            vqa = load_vqa_scorer(cfg["scores"]["vqa"], device=device)
            clip = load_clip_scorer(cfg["scores"]["clip"], device=device)
            aesthetic = load_aesthetic_scorer(cfg["scores"]["aesthetic"], device=device)
        for prompt_id, group in tqdm(groups.items(), desc=f"score {shard_path}", unit="prompt", disable=not progress,
                                     mininterval=2):
            record = qa.get(prompt_id)
            if record is None:
                raise DataError(f"shard {shard_path}, record {prompt_id}: prompt not found in {qa_path}")
            images = [shard.image(row) for row in group]
            vqa_scores, correct = vqa.score(images, record["qa"])
            clip_scores = clip.score(images, record["prompt"])
            aesthetic_scores = aesthetic.score(images)
            for n, row in enumerate(group):
                scores = {"vqa": float(vqa_scores[n]), "clip": float(clip_scores[n]),
                          "aesthetic": float(aesthetic_scores[n])}
                rows.append({
                    "prompt_id": prompt_id, "candidate": row["candidate"], "image": row["image"],
                    "seed": row["seed"], **scores, "total": weighted_total(scores, weights),
                    "vqa_correct": [bool(c) for c in correct[n]],
                })
    write_jsonl(out_path, rows)
    seconds = time.perf_counter() - started
    log.info("scores: %s: %d images of %d prompts in %.1f s", shard_path, len(rows), len(groups), seconds)
    return {"images": len(rows), "prompts": len(groups), "seconds": seconds}
