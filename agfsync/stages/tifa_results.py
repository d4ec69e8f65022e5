"""The question-accuracy result files of the TIFA images (agfsync.stages.metrics):

  tifa  TIFA score: per image the fraction of its questions the VQA model answers
        correctly (per-image rows' `correct`), mean over prompts;
  gold  gold accuracy (eval.tifa.gold: world): the same over the answers of the world's
        oracle (`gold_correct`), the exact reader of the world's images.

Both: per variant, accuracy per element type (over questions, TIFA's definition), per source
(the TIFA group, the id's prefix: coco, ...; the world's category) and, when the prompts carry
one, per split (world: seen / unseen color-shape pairs); the difference with its paired
bootstrap CI over prompts, and per element type, source and split
(agfsync.stages.result_parts.facet_intervals: per prompt, the accuracy over its questions of
that type). difference.by_group keeps the question-pooled accuracy difference per element type.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from agfsync.core import tifa
from agfsync.core.benchmarks import NAMES
from agfsync.core.io import DataError
from agfsync.stages.result_parts import add_intervals, check_same_prompts, envelope, facet_intervals

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

FACETS = ("element_type", "source", "split")


def _per_prompt_facets(row: dict, key: str) -> dict[str, dict[str, float]]:
    """{facet: {name: the prompt's accuracy over that part}} of one per-image row."""
    by_type = defaultdict(list)
    for element_type, ok in zip(row["element_types"], row[key]):
        by_type[element_type].append(bool(ok))
    accuracy = float(np.mean(row[key]))
    out = {"element_type": {t: float(np.mean(v)) for t, v in by_type.items()}, "source": {row["group"]: accuracy}}
    if "split" in row:
        out["split"] = {row["split"]: accuracy}
    return out


def _check_rows(rows_by_variant: dict[str, list[dict]], key: str, what: str) -> None:
    for variant, rows in rows_by_variant.items():
        for row in rows:
            if len(row[key]) != len(row["element_types"]) or not row[key]:
                raise DataError(f"{what}, {variant} image of {row['prompt_id']}: {len(row[key])} answers in "
                                f"'{key}' for {len(row['element_types'])} questions; rerun its eval_score shard")


def accuracy_result(metric: str, key: str, model: str, settings: Settings, config_hash: str,
                    rows_by_variant: dict[str, list[dict]], implementation: dict) -> dict:
    """`key`: the rows' per-question correctness ("correct": tifa, "gold_correct": gold)."""
    what = f"{metric} ({model})"
    check_same_prompts(rows_by_variant, what)
    _check_rows(rows_by_variant, key, what)
    values, details, per_prompt = {}, {}, {}
    for variant, rows in rows_by_variant.items():
        scored = tifa.score({r["prompt_id"]: list(zip(r["element_types"], r[key])) for r in rows})
        by_source, by_split = defaultdict(list), defaultdict(list)
        for r in rows:
            by_source[r["group"]].append(float(np.mean(r[key])))
            if "split" in r:
                by_split[r["split"]].append(float(np.mean(r[key])))
        details[variant] = {"by_element_type": scored["by_element_type"],
                            "by_source": {g: {"score": float(np.mean(v)), "num_prompts": len(v)}
                                          for g, v in sorted(by_source.items())},
                            "num_questions": scored["num_questions"]}
        if by_split:
            details[variant]["by_split"] = {s: {"score": float(np.mean(v)), "num_prompts": len(v)}
                                            for s, v in sorted(by_split.items())}
        values[variant] = {"value": scored["score"], "details": details[variant]}
        per_prompt[variant] = {r["prompt_id"]: r for r in rows}
    by_type = {t: details["agfsync"]["by_element_type"][t]["accuracy"] - details["base"]["by_element_type"][t]["accuracy"]
               for t in details["base"]["by_element_type"]}
    n = len(rows_by_variant["base"])
    result = envelope(metric, model, settings, config_hash,
                      benchmark={"name": NAMES["tifa"], "version": settings.eval.tifa.version},
                      higher_is_better=True, values=values, by_group=by_type, prompts=n, images=2 * n,
                      implementation=implementation)
    accuracy = {v: {k: float(np.mean(r[key])) for k, r in rows.items()} for v, rows in per_prompt.items()}
    add_intervals(result, settings.seed, accuracy["base"], accuracy["agfsync"])
    facets = {v: {k: _per_prompt_facets(r, key) for k, r in rows.items()} for v, rows in per_prompt.items()}
    for facet in FACETS:
        base = {k: f[facet] for k, f in facets["base"].items() if facet in f}
        tuned = {k: f[facet] for k, f in facets["agfsync"].items() if facet in f}
        if base:
            result["difference"][f"by_{facet}"] = facet_intervals(settings.seed, metric, facet, base, tuned)
    return result


ANSWERING = {
    "tifa": "tifa: the official protocol (tifascore): BLIP-2 generates a free-form answer to 'Answer the "
            "multiple-choice question. Question: ... Choices: ... Answer:' (beam 5, <= 30 new tokens), mapped to "
            "the nearest choice by a sentence embedding model unless it is one",
    "choices": "choices: ours, the choices scored (yes/no by the two tokens' logits; multiple choice by choice "
               "likelihood)",
}


def tifa_result(model: str, settings: Settings, config_hash: str, rows_by_variant: dict[str, list[dict]]) -> dict:
    tifa = settings.eval.tifa
    implementation = {"vqa_model": settings.scores.vqa.model, "answering": ANSWERING[tifa.answering],
                      "choice_likelihood": settings.scores.vqa.choice_likelihood}
    if tifa.answering == "tifa":
        implementation["sbert"] = tifa.sbert
    result = accuracy_result("tifa", "correct", model, settings, config_hash, rows_by_variant, implementation)
    if tifa.answering == "tifa":
        for variant, rows in rows_by_variant.items():
            result["variants"][variant]["details"]["answering_disagreement"] = disagreement(rows)
    return result


def disagreement(rows: list[dict]) -> dict:
    """How often the official answers (mapped choices) differ from ours on the same images and questions."""
    pairs = [(a, b) for r in rows for a, b in zip(r["answers"], r["choices_answers"], strict=True)]
    differ = sum(a.strip().lower() != b.strip().lower() for a, b in pairs)
    return {"questions": len(pairs), "disagree": differ, "rate": differ / len(pairs) if pairs else None,
            "compared_with": "choices"}


def gold_result(model: str, settings: Settings, config_hash: str, rows_by_variant: dict[str, list[dict]]) -> dict:
    return accuracy_result("gold", "gold_correct", model, settings, config_hash, rows_by_variant, {
        "gold": settings.eval.tifa.gold,
        "value": "gold_accuracy: mean over prompts of the fraction of the prompt's questions whose oracle "
                 "answer equals the benchmark's",
        "reader": "agfsync.world.oracle: reads the objects of the image back and answers from them; "
                  "an attribute it cannot read counts as wrong"})
