"""`agfsync world check`: how good is the world, measured (torch).

On fresh held-out prompts (a stream no training run drew from; half of them use a
held-out color-shape pair, reported separately as "unseen"):
  oracle_accuracy_on_renders   the oracle's TIFA accuracy on clean renders of the prompts' scenes
  base_recognisable_rate       base-model images with >= 1 object the oracle reads fully
  base_gold_accuracy           the oracle's TIFA accuracy on base-model images (mean over prompts)
  vqa_agreement                BLIP-2 answers equal to the oracle's, on base-model images
                               (also on the questions the oracle answers, not "unrecognised";
                               vqa_diagnostics: per question kind, BLIP-2 right on the clean
                               renders, agreement, and "yes" where the oracle reads "no")
  clip_gold_spearman           CLIP score vs gold accuracy, per image
  aesthetic_quality_spearman   aesthetic score vs the renderer's quality, per perturbed render
  candidate_spread             prompts whose 8 candidates (sigma-noised, as stage 2) differ in gold
Images come from the real stage-2 generator (agfsync.stages.candidates.CandidateGenerator)
and the scores from the real scorers (agfsync.models.vqa, clip_score, aesthetic).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from agfsync.world import benchmark, oracle, questions, scenes
from agfsync.world.grammar import CATEGORIES
from agfsync.world.scenes import rng_for

GENERATION = {"scheduler": "ddim", "steps": 20, "guidance_scale": 4.0}


def held_out_prompts(seed: int, n: int, stream: str = "check") -> list[dict]:
    """`n` prompt records {id, prompt, category, split, qa, scene}: categories in turn, half
    of them with a held-out color-shape pair (agfsync.world.benchmark.prompts)."""
    return benchmark.prompts(seed, n, stream)


def model_settings(pretrained: str):
    from agfsync.core.sections import ModelSettings

    return ModelSettings.from_dict({
        "family": "sd1", "pretrained": pretrained, "resolution": 64, "generation": GENERATION,
        # not used here; a ModelSettings has them
        "train": {"lr": 1e-5, "global_batch": 1, "steps": 1, "beta_dpo": 5000.0},
    })


def _generator(models: Path, seed: int, n: int, sigma: float):
    from agfsync.stages.candidates import CandidateGenerator

    return CandidateGenerator("world", model_settings(str(models / "sd1")), seed=seed, num_per_prompt=n, sigma=sigma,
                              clean_first=False, pooled_noise="sigma", shared_latents=False, keep_latents=False,
                              attention="sdpa", device="cpu")


def _images(generator, records, batch: int, label: str):
    from PIL import Image

    out = []
    for start in tqdm(range(0, len(records), batch), desc=label, mininterval=5):
        _, images, _ = generator.generate(records[start : start + batch])
        out += [Image.fromarray(a) for a in images]
    return out


def provenance(models: Path) -> dict:
    """Date, machine and the models' manifest digest: what a stored measurement needs."""
    import datetime
    import os
    import platform

    import torch

    from agfsync.core.io import sha256_file

    return {"date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads",
            "models_manifest_sha256": sha256_file(models / "MANIFEST.json")}


def _value(value, n, **extra):
    return {"value": None if value is None or np.isnan(value) else round(float(value), 4), "n": int(n), **extra}


def run(models: str | Path, *, seed: int = 0, prompts: int = 500, spread_prompts: int = 100,
        quality_images: int = 500, grid: str | None = None) -> dict:
    import torch

    from agfsync.models.aesthetic import AestheticScorer
    from agfsync.models.clip_score import CLIPScorer
    from agfsync.models.loaders import load_aesthetic, load_blip2, load_clip
    from agfsync.models.vqa import VQAScorer

    models = Path(models)
    records = held_out_prompts(seed, prompts)
    result: dict = {"prompts": prompts, "seed": seed, "generation": GENERATION, **provenance(models)}

    right = total = 0
    for r in records:
        render = scenes.render(r["scene"])
        right += sum(oracle.answer(render, q) == q["answer"] for q in r["qa"])
        total += len(r["qa"])
    result["oracle_accuracy_on_renders"] = _value(right / total, total, unit="questions")

    with torch.no_grad():
        base = _images(_generator(models, seed, 1, 0.0), records, 50, "world check: base images")
    gold, readable, by_split, by_type, by_category = [], 0, defaultdict(list), defaultdict(list), defaultdict(list)
    oracle_answers = []
    for r, image in zip(records, base):
        detected = oracle.read(image)
        readable += any(d.color and d.shape for d in detected)
        answers = [questions.answer_objects(detected, q) for q in r["qa"]]
        oracle_answers.append(answers)
        correct = [a == q["answer"] for a, q in zip(answers, r["qa"])]
        gold.append(float(np.mean(correct)))
        by_split[r["split"]].append(gold[-1])
        by_category[r["category"]].append(gold[-1])
        for q, ok in zip(r["qa"], correct):
            by_type[q["element_type"]].append(ok)
    result["base_recognisable_rate"] = _value(readable / len(base), len(base), unit="images")
    result["base_gold_accuracy"] = _value(np.mean(gold), len(gold), unit="prompts")
    result["base_gold_accuracy_by_split"] = {k: _value(np.mean(v), len(v)) for k, v in sorted(by_split.items())}
    result["base_gold_accuracy_by_category"] = {k: _value(np.mean(v), len(v)) for k, v in sorted(by_category.items())}
    result["base_gold_accuracy_by_element_type"] = {k: _value(np.mean(v), len(v), unit="questions")
                                                    for k, v in sorted(by_type.items())}

    model, processor, device = load_blip2(str(models / "blip2"), device="cpu")
    vqa = VQAScorer(model, processor, device)
    agree = count = agree_read = read = 0
    judge = defaultdict(list)  # diagnostics of the judge, by question kind (vqa_diagnostics)
    for r, image, answers in zip(records, base, oracle_answers):
        (vqa_answers,) = vqa.answer([image], r["qa"])
        (on_render,) = vqa.answer([scenes.render(r["scene"])], r["qa"])
        agree += sum(a == o for a, o in zip(vqa_answers, answers))
        count += len(answers)
        agree_read += sum(a == o for a, o in zip(vqa_answers, answers) if o != questions.UNRECOGNISED)
        read += sum(o != questions.UNRECOGNISED for o in answers)
        for q, a, o, w in zip(r["qa"], vqa_answers, answers, on_render):
            kind = f"{q['element_type']}, {'yes/no' if sorted(q['choices']) == ['no', 'yes'] else 'choice'}"
            judge[kind, "right_on_renders"].append(w == q["answer"])
            if o != questions.UNRECOGNISED:
                judge[kind, "agreement_where_oracle_reads"].append(a == o)
            if o == "no":
                judge[kind, "yes_where_oracle_reads_no"].append(a == "yes")
    result["vqa_agreement"] = _value(agree / count, count, unit="questions")
    # Where the oracle reads no answer ("unrecognised"), BLIP-2, which must pick a choice, cannot agree.
    result["vqa_agreement_where_oracle_reads"] = _value(agree_read / read if read else None, read, unit="questions")
    result["vqa_diagnostics"] = {  # per question kind: BLIP-2 on the prompts' clean renders, and on base images
        measure: {kind: _value(float(np.mean(v)), len(v), unit="questions")
                  for (kind, m), v in sorted(judge.items()) if m == measure}
        for measure in ("right_on_renders", "agreement_where_oracle_reads", "yes_where_oracle_reads_no")}

    clip_model, clip_processor, device = load_clip(str(models / "clip"), device="cpu")
    clip = CLIPScorer(clip_model, clip_processor, device)
    clip_scores = [float(clip.score([image], r["prompt"])[0]) for r, image in zip(records, base)]
    result["clip_gold_spearman"] = _value(spearmanr(clip_scores, gold).statistic, len(gold), unit="images")

    aesthetic = AestheticScorer(*load_aesthetic(str(models / "clip"), str(models / "aesthetic" / "head.pth"),
                                                device="cpu"))
    rng = rng_for(seed, "check-quality")
    looks = [scenes.perturb(scenes.sample_scene(rng, CATEGORIES[i % len(CATEGORIES)])[1], rng)
             for i in range(quality_images)]
    predicted = aesthetic.score([im for im, _ in looks])
    result["aesthetic_quality_spearman"] = _value(spearmanr(predicted, [q for _, q in looks]).statistic,
                                                  len(looks), unit="perturbed renders")

    subset = records[:spread_prompts]
    with torch.no_grad():
        candidates = _images(_generator(models, seed, 8, 0.1), subset, 10, "world check: candidates")
    spread = 0
    for p, r in enumerate(subset):
        golds = {oracle.accuracy(image, r["qa"]) for image in candidates[8 * p : 8 * p + 8]}
        spread += len(golds) > 1
    result["candidate_spread"] = _value(spread / len(subset), len(subset), unit="prompts")
    if grid:
        write_grid(grid, records[:8], base[:8])
    return result


def write_grid(path, records, images, scale: int = 3) -> None:
    """A PNG: the render of each prompt's scene (top row) above the base model's image for
    the same caption (bottom row), each scale x larger, captions numbered in a text file."""
    from PIL import Image

    size = images[0].size[0] * scale
    grid = Image.new("RGB", (size * len(records) + 4 * (len(records) - 1), 2 * size + 4), (255, 255, 255))
    for i, (r, image) in enumerate(zip(records, images)):
        x = i * (size + 4)
        grid.paste(scenes.render(r["scene"]).resize((size, size), Image.NEAREST), (x, 0))
        grid.paste(image.resize((size, size), Image.NEAREST), (x, size + 4))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    Path(path).with_suffix(".txt").write_text("".join(f"{i + 1}. {r['prompt']}\n" for i, r in enumerate(records)))


TARGETS = {
    "oracle_accuracy_on_renders": (0.99, None), "base_recognisable_rate": (0.90, None),
    "base_gold_accuracy": (0.35, 0.75), "vqa_agreement": (0.85, None), "clip_gold_spearman": (0.3, None),
    "candidate_spread": (0.5, None), "aesthetic_quality_spearman": (None, None),
    "vqa_agreement_where_oracle_reads": (None, None),
}


def table(result: dict) -> str:
    lines = [f"{'measure':32s} {'value':>8s} {'n':>7s}  target"]
    for key, (low, high) in TARGETS.items():
        entry = result[key]
        target = ("-" if low is None else f">= {low}") if high is None else f"{low} .. {high}"
        ok = entry["value"] is not None and (low is None or entry["value"] >= low) and (high is None or entry["value"] <= high)
        mark = "" if low is None else ("  ok" if ok else "  MISSED")
        lines.append(f"{key:32s} {entry['value']!s:>8s} {entry['n']:7d}  {target}{mark}")
    for group in ("base_gold_accuracy_by_split", "base_gold_accuracy_by_element_type", "base_gold_accuracy_by_category"):
        for name, entry in result[group].items():
            lines.append(f"  {group.removeprefix('base_gold_accuracy_')} {name:18s} {entry['value']!s:>8s} {entry['n']:7d}")
    for measure, kinds in result.get("vqa_diagnostics", {}).items():
        for kind, entry in kinds.items():
            lines.append(f"  vqa {measure} {kind:18s} {entry['value']:8.3f} {entry['n']:7d}")
    return "\n".join(lines)
