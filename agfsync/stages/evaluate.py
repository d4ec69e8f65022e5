"""Stage 6: evaluation images and their per-image scores, one shard at a time.

Images (rule eval_generate): one image per benchmark prompt and variant, `base` (the
pretrained model) or `agfsync` (the same pipeline with the fine-tuned UNet). Both use
the model's sampler, steps and guidance (models.<name>.generation) and the same seeds:
latents and sampler noise derive from (seed, "eval", benchmark) and the prompt id, never
from the variant, so the two images of a prompt differ only by the UNet. No embedding
noise. Shards are the candidate stage's tar files (agfsync.core.shards).

Per-image scores (rule eval_score, one job per {bench} shard), each written atomically:
  tifa   every TIFA question answered by the VQA model of scores.vqa (BLIP-2 flan-t5-xxl in
         the paper). TIFA maps a free-form answer to the nearest choice; we score the
         choices instead (agfsync.models.vqa fast path: yes/no by the yes/no logits, other
         questions by the choice with the highest likelihood), which never produces an
         off-list answer. Also the stage-3 sub-scores of the same image, as stage 3 computes
         them (`vqa`: scores.vqa.method, 0..100; `clip`; `aesthetic`), whose weighted total is
         the proxy metric; with eval.tifa.gold, the gold answerer's per-question correctness
         (`gold_correct`, `gold`): a function given by the caller (the world's oracle lives in
         agfsync.world, which stages may not import; workflow/scripts/eval_score.py and
         `agfsync eval-score` pass agfsync.world.oracle.answer);
  hpsv2  HPS v2 score (agfsync.models.hps);
  mjhq   FID features (agfsync.models.fid), saved as .npz.

Entry points, one per rule, each called by the rule's script and by an `agfsync` command:
  run_prompts    rule eval_prompts          a benchmark's prompt list     `agfsync eval-prompts`
  run_generate   rule eval_generate         one shard of images           `agfsync eval-generate`
  run_score      rule eval_score ({bench})  per-image scores or features  `agfsync eval-score`
  run_reference  rule eval_reference_mjhq   MJHQ reference features       `agfsync eval-reference`
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from agfsync.core.benchmarks import VARIANTS
from agfsync.core.ids import read_records
from agfsync.core.io import DataError, atomic_open, write_jsonl
from agfsync.core.seeds import derive_seed
from agfsync.core.shards import Shard, shard_records

if TYPE_CHECKING:
    from PIL.Image import Image

    from agfsync.core.sections import HPSv2Settings, MJHQSettings, ScoresSettings, Settings, TIFASettings

log = logging.getLogger(__name__)
# A gold answerer (eval.tifa.gold): its answer (one of the choices, or anything else for "cannot
# tell", which counts as wrong) to one TIFA question record {question, choices, answer,
# element_type} on one image; ValueError when the question is not one it can answer.
GoldAnswer = Callable[["Image", dict], str]


# ----------------------------------------------------------------------------- entry points


def run_prompts(settings: Settings, inputs: Mapping, outputs: Mapping, *, bench: str) -> int:
    """Rule eval_prompts (`agfsync eval-prompts`): the benchmark's prompt list, in its fixed
    order, into outputs["prompts"] (agfsync.core.benchmarks reads the files eval.<bench> names)."""
    from agfsync.core.benchmarks import load_benchmark
    from agfsync.stages.configdict import config_dict

    return write_jsonl(outputs["prompts"], load_benchmark(config_dict(settings), bench))


def run_generate(settings: Settings, inputs: Mapping, outputs: Mapping, *, model: str, variant: str, bench: str,
                 shard, progress: bool = True) -> dict:
    """Rule eval_generate (`agfsync eval-generate`): the images of shard `shard` (eval.shard_size
    prompts) of inputs["prompts"] into outputs["shard"]; the agfsync variant loads the UNet
    of the fine-tuned model directory inputs["unet"] (its `unet/` subfolder)."""
    prompts = inputs["prompts"]
    records = shard_records(read_records(prompts, required=("id", "prompt", "group")), int(shard),
                            settings.eval.shard_size, source=prompts)
    tuned = inputs["unet"] if "unet" in inputs else []
    tuned = [tuned] if isinstance(tuned, str) else list(tuned)
    unet = f"{tuned[0]}/unet" if variant == "agfsync" and tuned else None
    return generate_eval_shard(settings, model, bench, variant, records, outputs["shard"], unet=unet,
                               progress=progress)


def run_score(settings: Settings, inputs: Mapping, outputs: Mapping, *, bench: str, progress: bool = True,
              gold: GoldAnswer | None = None, **wildcards) -> int:
    """Rule eval_score (`agfsync eval-score`), over {bench}: the per-image scores of the image
    shard inputs["shard"] (prompts: inputs["prompts"]) into outputs["scores"] (tifa: VQA,
    CLIP and aesthetic scores from scores.*; hpsv2: HPS v2 from eval.hpsv2), or its FID
    features into outputs["features"] (mjhq: eval.mjhq). `gold`: the answerer that
    eval.tifa.gold names (its answer to one question record on one image; "world":
    agfsync.world.oracle.answer), used for tifa when that key is set. The other wildcards
    (model, variant, shard) only name the job."""
    shard, prompts = inputs["shard"], inputs["prompts"]
    if bench == "tifa":
        wanted = settings.eval.tifa.gold
        if wanted and gold is None:
            raise ValueError(f"eval.tifa.gold is {wanted!r}, but no gold answerer was given to the TIFA scoring "
                             f"(workflow/scripts/eval_score.py and `agfsync eval-score` pass the world's oracle)")
        return score_tifa_shard(settings.scores, shard, prompts, outputs["scores"], device=settings.device,
                                progress=progress, gold=gold if wanted else None, tifa=settings.eval.tifa)
    if bench == "hpsv2":
        return score_hps_shard(settings.eval.hpsv2, shard, prompts, outputs["scores"], device=settings.device,
                               progress=progress)
    if bench == "mjhq":
        return features_mjhq_shard(settings.eval.mjhq, shard, prompts, outputs["features"], device=settings.device)
    raise ValueError(f"unknown benchmark {bench!r} (expected tifa, hpsv2 or mjhq)")


def run_reference(settings: Settings, inputs: Mapping, outputs: Mapping, **wildcards) -> int:
    """Rule eval_reference_mjhq (`agfsync eval-reference`): FID features of the MJHQ reference
    images (eval.mjhq.images) of the prompts in inputs["prompts"], into outputs["features"]."""
    return features_mjhq_reference(settings.eval.mjhq, inputs["prompts"], outputs["features"],
                                   device=settings.device)


# ----------------------------------------------------------------------------- images


def eval_generator(settings: Settings, model_name: str, scope: str, *, unet=None, device=None, per_prompt: int = 1):
    """The evaluation's draw (also `agfsync generate`'s): clean images, no embedding noise,
    seeds from (seed, "eval", scope) and the prompt id; candidate k of a prompt is its k-th image."""
    from agfsync.stages.candidates import CandidateGenerator

    return CandidateGenerator(
        model_name, settings.models[model_name], seed=derive_seed(settings.seed, "eval", scope),
        num_per_prompt=per_prompt, sigma=0.0, clean_first=False, pooled_noise="none", shared_latents=False,
        keep_latents=False, attention=settings.candidates.attention, device=device or settings.device, unet=unet)


def generate_eval_shard(settings: Settings, model_name: str, bench: str, variant: str, records: list[dict], out_path,
                        *, unet=None, device=None, progress: bool = True) -> dict:
    """One image per record, no embedding noise, seeds from (seed, "eval", bench) and the prompt
    id, eval.prompts_per_batch prompts per UNet call. Reads settings.models[model_name],
    settings.candidates.attention, settings.eval.prompts_per_batch, seed and device."""
    from agfsync.stages.candidates import write_images

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (expected 'base' or 'agfsync')")
    if (variant == "agfsync") != (unet is not None):
        raise ValueError(f"variant {variant!r}: the fine-tuned UNet is used exactly for 'agfsync'")
    rows = [{"id": r["id"], "prompt": r["prompt"], "category": r["group"]} for r in records]
    return write_images(lambda: eval_generator(settings, model_name, bench, unet=unet, device=device), rows,
                        out_path, prompts_per_batch=settings.eval.prompts_per_batch,
                        label=model_name, progress=progress, row_extra={"variant": variant, "benchmark": bench})


# ----------------------------------------------------------------------------- per-image scores


def _by_id(prompts_path) -> dict[str, dict]:
    return {r["id"]: r for r in read_records(prompts_path, required=("id", "prompt", "group"))}


@contextlib.contextmanager
def open_shard(shard_path, prompts_path):
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


def score_tifa_shard(scores: ScoresSettings, shard_path, prompts_path, out_path, *, device=None,
                     progress: bool = True, gold: GoldAnswer | None = None, tifa: TIFASettings | None = None) -> int:
    """Per image: `correct` (TIFA, by eval.tifa.answering: `tifa`, the official free-form answers
    mapped to a choice, or `choices`, ours; without `tifa` settings, ours), `tifa`, the stage-3
    sub-scores `vqa`, `clip` and `aesthetic`, the prompt's `split` when it has one, and with
    `gold` the gold answerer's `gold_correct` (same order as `correct`) and `gold` (their mean).
    With the official answering also `free_form` (BLIP-2's text), `answers` (the mapped choices)
    and `choices_answers` (ours, on the same image): how often the protocols disagree."""
    from tqdm import tqdm

    from agfsync.models.aesthetic import load_aesthetic_scorer
    from agfsync.models.clip_score import load_clip_scorer
    from agfsync.models.loaders import pick_device
    from agfsync.models.vqa import VQAScorer, load_vqa_scorer

    official = tifa is not None and tifa.answering == "tifa"
    started = time.perf_counter()
    rows = []
    with open_shard(shard_path, prompts_path) as (shard, items):
        if items:
            device = pick_device(device)
            vqa = load_vqa_scorer(scores.vqa, device=device, method="fast")  # our answering: the choices scored
            # the VQA score of stage 3 (scores.vqa.method): the same weights, so another method reuses them
            stage3 = vqa if scores.vqa.method == "fast" else VQAScorer(
                vqa.model, vqa.processor, vqa.device, method=scores.vqa.method, batch_size=scores.vqa.batch_size,
                choice_likelihood=scores.vqa.choice_likelihood)
            if official:
                from agfsync.models.tifa_answer import TifaAnswerer, load_sentence_embedder

                answerer = TifaAnswerer(vqa.model, vqa.processor, vqa.device, load_sentence_embedder(tifa.sbert, device))
            clip = load_clip_scorer(scores.clip, device=device)
            aesthetic = load_aesthetic_scorer(scores.aesthetic, device=device)
        for record, row in tqdm(items, desc=f"tifa {shard_path}", unit="image", disable=not progress, mininterval=2):
            image, qa = shard.image(row), record["qa"]
            if not qa:
                raise DataError(f"shard {shard_path}, record {record['id']}: no questions to answer")
            choices = vqa.answer([image], qa)[0]
            ours = [a.strip().lower() == q["answer"].strip().lower() for a, q in zip(choices, qa)]
            vqa_score = 100.0 * float(np.mean(ours)) if stage3 is vqa else float(stage3.score([image], qa)[0][0])
            out = {"prompt_id": record["id"], "group": record["group"], "correct": ours,
                   "element_types": [q["element_type"] for q in qa]}
            if official:
                free, mapped = answerer.answer(image, qa)
                # tifascore: correct when the mapped choice is the answer (the strings of one record)
                out.update(correct=[m == q["answer"] for m, q in zip(mapped, qa)], free_form=free, answers=mapped,
                           choices_answers=choices)
            out.update({
                "tifa": float(np.mean(out["correct"])), "vqa": vqa_score,
                "clip": float(clip.score([image], record["prompt"])[0]),
                "aesthetic": float(aesthetic.score([image])[0]), "seed": row["seed"],
            })
            if "split" in record:
                out["split"] = record["split"]
            if gold is not None:
                out["gold_correct"] = gold_correct(gold, image, record, f"shard {shard_path}, record {record['id']}")
                out["gold"] = float(np.mean(out["gold_correct"]))
            rows.append(out)
    write_jsonl(out_path, rows)
    log.info("eval tifa: %s: %d images in %.1f s", shard_path, len(rows), time.perf_counter() - started)
    return len(rows)


def gold_correct(gold: GoldAnswer, image, record: dict, where: str) -> list[bool]:
    """Per question of `record`: does the gold answerer's answer equal the benchmark's (case and
    surrounding spaces aside, as agfsync.world.oracle.accuracy compares them)?"""
    out = []
    for number, question in enumerate(record["qa"]):
        try:
            answer = gold(image, question)
        except ValueError as err:
            raise DataError(f"{where}, question {number} ({question.get('question')!r}): the gold answerer of "
                            f"eval.tifa.gold cannot answer it: {err} (eval.tifa.gold is only meaningful on the "
                            f"world benchmark, data/world/benchmark/tifa)") from None
        out.append(str(answer).strip().lower() == str(question["answer"]).strip().lower())
    return out


def score_hps_shard(hpsv2: HPSv2Settings, shard_path, prompts_path, out_path, *, device=None,
                    progress: bool = True) -> int:
    from tqdm import tqdm

    from agfsync.models.hps import HPSScorer
    from agfsync.models.loaders import load_hps, pick_device

    started = time.perf_counter()
    rows = []
    with open_shard(shard_path, prompts_path) as (shard, items):
        if items:
            model, tokenizer, device = load_hps(hpsv2.model, hpsv2.checkpoint, device=pick_device(device),
                                                model_config=hpsv2.model_config)
            scorer = HPSScorer(model, tokenizer, device, hpsv2.version)
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


def features_mjhq_shard(mjhq: MJHQSettings, shard_path, prompts_path, out_path, *, device=None) -> int:
    from agfsync.models.fid import extract, load_extractor
    from agfsync.models.loaders import pick_device

    features, info = np.zeros((0, 0)), {}
    with open_shard(shard_path, prompts_path) as (shard, items):
        if items:
            device = pick_device(device)
            net, info = load_extractor(mjhq, device)
            features = extract((shard.image(row) for _, row in items), net, device, mjhq.batch_size)
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


def features_mjhq_reference(mjhq: MJHQSettings, prompts_path, out_path, *, device=None) -> int:
    from tqdm import tqdm

    from agfsync.models.fid import extract, load_extractor
    from agfsync.models.loaders import pick_device

    records = read_records(prompts_path, required=("id", "group"))
    device = pick_device(device)
    net, info = load_extractor(mjhq, device)
    images = tqdm(reference_images(mjhq.images, records), total=len(records), desc="mjhq reference",
                  unit="image", mininterval=2)
    features = extract(images, net, device, mjhq.batch_size)
    save_features(out_path, [r["id"] for r in records], [r["group"] for r in records], features, info)
    return len(records)
