"""Stage 3, rule candidates_score: AI feedback for every candidate of one shard.

Per image: VQA score (BLIP-2, the prompt's QA pairs), CLIP score and aesthetic score,
each on 0..100. Output: one JSONL row per image with the sub-scores and the per-question
correctness, written atomically. Their weighted total (scores.weights) is computed by
pairs_select (agfsync.core.pairs), so that new weights do not rerun the scoring.
Entry point: `run(settings, inputs, outputs)`, called by the rule's script and by
`agfsync score`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agfsync.core.ids import read_records
from agfsync.core.io import DataError, write_jsonl

if TYPE_CHECKING:
    from agfsync.core.sections import ScoresSettings, Settings

log = logging.getLogger(__name__)


def run(settings: Settings, inputs: Mapping, outputs: Mapping, *, progress: bool = True, **wildcards) -> dict:
    """Rule candidates_score (`agfsync score`): the scores of the candidate shard inputs["shard"]
    against the prompts' QA pairs in inputs["qa"], into outputs["scores"]. The wildcards (model,
    shard) only name the job."""
    return score_shard(settings.scores, inputs["shard"], inputs["qa"], outputs["scores"], device=settings.device,
                       progress=progress)


def score_shard(scores: ScoresSettings, shard_path, qa_path, out_path, *, device=None, progress: bool = True) -> dict:
    from tqdm import tqdm

    from agfsync.models.aesthetic import load_aesthetic_scorer
    from agfsync.models.clip_score import load_clip_scorer
    from agfsync.models.loaders import pick_device
    from agfsync.core.shards import Shard
    from agfsync.models.vqa import load_vqa_scorer

    started = time.perf_counter()
    qa = {r["id"]: r for r in read_records(qa_path, required=("id", "prompt", "qa"))}  # ids checked, unique
    rows = []
    with Shard(shard_path) as shard:
        groups = shard.by_prompt()
        if groups:
            device = pick_device(device)
            vqa = load_vqa_scorer(scores.vqa, device=device)
            clip = load_clip_scorer(scores.clip, device=device)
            aesthetic = load_aesthetic_scorer(scores.aesthetic, device=device)
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
                subscores = {"vqa": float(vqa_scores[n]), "clip": float(clip_scores[n]),
                             "aesthetic": float(aesthetic_scores[n])}
                rows.append({
                    "prompt_id": prompt_id, "candidate": row["candidate"], "image": row["image"],
                    "seed": row["seed"], **subscores,
                    "vqa_correct": [bool(c) for c in correct[n]],
                })
    write_jsonl(out_path, rows)
    seconds = time.perf_counter() - started
    log.info("scores: %s: %d images of %d prompts in %.1f s", shard_path, len(rows), len(groups), seconds)
    return {"images": len(rows), "prompts": len(groups), "seconds": seconds}
