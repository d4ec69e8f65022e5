"""Rule eval_trajectory: proxy reward and gold accuracy along training (results/{model}/trajectory.json).

On the first eval.trajectory.prompts prompts of the TIFA benchmark (the held-out prompts of
results/eval/tifa/prompts.jsonl, the same seeds as the main evaluation), one image per prompt
from each point of training: step 0 (the base model), every snapshot the trainer saved
(train.snapshots: {trained}/snapshots/step-N/unet) and the final UNet ({trained}/unet). Each
image is scored as the TIFA images are (agfsync.stages.evaluate.score_tifa_shard: the
stage-3 judges, and the gold answerer of eval.tifa.gold when set); per point: the proxy reward
(scores.weights over the judges' sub-scores: the total that chose the training pairs), the
judges' sub-scores, and gold accuracy, each with its mean CI and its paired change from step 0
(agfsync.core.trajectory). The images and scores of each point are kept in a work directory
next to the output ({out}.work/step-N/): a rerun after a crash redoes only the missing points.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from agfsync.core import stats, trajectory
from agfsync.core.io import DataError, read_json, read_jsonl, write_json, write_jsonl
from agfsync.core.pairs import SUBSCORES, weighted_total
from agfsync.core.ids import read_records
from agfsync.core.seeds import derive_seed
from agfsync.stages.evaluate import GoldAnswer, generate_eval_shard, score_tifa_shard

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

log = logging.getLogger(__name__)
MEASURES = ("proxy", "vqa", "clip", "aesthetic", "tifa")


def points_of(trained: Path) -> list[tuple[int, str | None]]:
    """(step, UNet directory or None for the base model) of every point of training, in order."""
    summary = read_json(trained / "summary.json")
    snapshots = sorted((trained / "snapshots").glob("step-*/unet")) if (trained / "snapshots").is_dir() else []
    points = [(0, None)] + [(int(p.parent.name.split("-")[1]), str(p)) for p in snapshots]
    return points + [(int(summary["steps"]), str(trained / "unet"))]


def run(settings: Settings, inputs: Mapping, outputs: Mapping, *, model: str, gold: GoldAnswer | None = None,
        progress: bool = True) -> dict:
    trained, out = Path(inputs["trained"]), Path(outputs["trajectory"])
    wanted = settings.eval.tifa.gold
    if wanted and gold is None:
        raise ValueError(f"eval.tifa.gold is {wanted!r}, but no gold answerer was given to eval_trajectory "
                         f"(workflow/scripts/eval_trajectory.py passes the world's oracle)")
    records = read_records(inputs["prompts"], required=("id", "prompt", "group"))
    count = settings.eval.trajectory.prompts
    if len(records) < count:
        raise DataError(f"{inputs['prompts']}: {len(records)} prompts, eval.trajectory.prompts asks for {count}")
    records = records[:count]
    work = out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    prompts_path = work / "prompts.jsonl"
    write_jsonl(prompts_path, records)
    weights = {k: getattr(settings.scores.weights, k) for k in sorted(SUBSCORES)}
    steps = points_of(trained)
    total = steps[-1][0]
    per_step: dict[int, dict[str, list[float]]] = {}
    for step, unet in steps:
        folder = work / f"step-{step:06d}"
        scores_path = folder / "scores.jsonl"
        if not scores_path.exists():
            folder.mkdir(exist_ok=True)
            shard = folder / "images.tar"
            generate_eval_shard(settings, model, "tifa", "base" if unet is None else "agfsync", records, shard,
                                unet=unet, progress=progress)
            score_tifa_shard(settings.scores, shard, prompts_path, scores_path, device=settings.device,
                             progress=progress, gold=gold if wanted else None)
        rows = {r["prompt_id"]: r for r in read_jsonl(scores_path, required=("prompt_id",))}
        ordered = [rows[r["id"]] for r in records]
        values = {name: [float(r[name]) for r in ordered] for name in MEASURES if name != "proxy"}
        values["proxy"] = [weighted_total(r, weights) for r in ordered]
        if wanted:
            values["gold"] = [float(r["gold"]) for r in ordered]
        per_step[step] = values
        log.info("trajectory %s: step %d/%d proxy %.3f%s", model, step, total,
                 sum(values["proxy"]) / len(ordered),
                 f" gold {sum(values['gold']) / len(ordered):.3f}" if wanted else "")
    seed = derive_seed(settings.seed, "trajectory", model)
    points = [trajectory.point(step, step / total, per_step[step], per_step[0], seed) for step, _ in steps]
    result = {
        "model": model, "prompts": count, "benchmark": "tifa", "gold": wanted, "weights": weights,
        "measures": ["proxy", *(["gold"] if wanted else []), *[m for m in MEASURES if m != "proxy"]],
        "ci": {"method": "percentile bootstrap over prompts (paired for changes from step 0)",
               "resamples": stats.RESAMPLES, "seed": seed, "level": stats.LEVEL},
        "points": points,
        "warning": trajectory.warning(points, per_step, seed=seed),
    }
    write_json(out, result)
    return result
