"""The world's held-out benchmark, in TIFA v1.0's file format (pure: no torch).

`prompts(seed, n, stream, split)` draws n prompt records {id, prompt, category, split, qa,
scene} from their own random stream, the categories in turn. Split "seen": the training
distribution (color-shape pairs that training prompts use; the world writer writes only
these); "unseen": every one names a color-shape pair that no training text of the world
uses (grammar.HELD_OUT_PAIRS), a test of composition beyond the training data; "both":
alternating, with the categories' roles swapped every round of them, so that every category
has as many prompts of each split (n a multiple of 12) and the split is not confounded with
the category.
`tifa_files` writes them as TIFA's two files, so the workflow's TIFA path (eval_prompts,
eval_generate, eval_score) runs on them unchanged:

  tifa_v1.0_text_inputs.json        [{id, caption, category, split}], id {category}_{index:05d} ("_" in a category -> "-")
                                    (the workflow's TIFA group is the id's prefix: the category)
  tifa_v1.0_question_answers.json   [{id, caption, question, choices, answer, element,
                                      element_type}], element_type one of ELEMENT_TYPES

`agfsync world benchmark --out DIR` writes them. Shipped copies (tests/test_world_benchmark.py
checks they are reproduced byte for byte): data/world/benchmark/tifa/ (the demo's held-out
prompts: 300, seed 1, stream "benchmark", split "seen") and data/world/benchmark/control/
(config/control.yaml's: 600, seed 1, stream "control", split "seen"). The world check
(agfsync.world.check) measures both splits. Questions and answers are the oracle's: the
world's gold standard reads them back (agfsync.world.oracle.accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path

from agfsync.world import captions, questions, scenes
from agfsync.world.grammar import CATEGORIES

ELEMENT_TYPES = ("object", "color", "shape", "size", "counting", "spatial")
FILES = ("tifa_v1.0_text_inputs.json", "tifa_v1.0_question_answers.json")
DEFAULT = {"seed": 1, "n": 300, "stream": "benchmark", "split": "seen"}
SPLITS = ("seen", "unseen", "both")


def prompts(seed: int, n: int, stream: str, split: str = "both") -> list[dict]:
    """`n` prompt records of `split` (SPLITS), the categories in turn."""
    if split not in SPLITS:
        raise ValueError(f"benchmark split {split!r}: expected one of {', '.join(SPLITS)}")
    records = []
    for i in range(n):
        rng = scenes.rng_for(seed, stream, i)
        category = CATEGORIES[i % len(CATEGORIES)]
        # both: seen and unseen alternate, and swap places every round of the categories, so
        # every category gets both and every prefix of the list is as balanced as it can be
        record_split = split if split != "both" else ("unseen" if (i + i // len(CATEGORIES)) % 2 else "seen")
        description, scene = scenes.sample_scene(rng, category, record_split)
        records.append({"id": f"{stream}-{i:05d}", "prompt": captions.caption(description, rng), "category": category,
                        "split": record_split, "qa": questions.questions(description, rng), "scene": scene})
    return records


def tifa_files(seed: int, n: int, stream: str, split: str) -> tuple[list[dict], list[dict]]:
    """(text inputs, question-answer rows) in TIFA v1.0's format."""
    inputs, rows = [], []
    for i, record in enumerate(prompts(seed, n, stream, split)):
        prompt_id = f"{record['category'].replace('_', '-')}_{i:05d}"  # TIFA's convention: the id's prefix is the group
        inputs.append({"id": prompt_id, "caption": record["prompt"], "category": record["category"],
                       "split": record["split"]})
        for qa in record["qa"]:
            if qa["element_type"] not in ELEMENT_TYPES:
                raise ValueError(f"benchmark prompt {record['id']}: element_type {qa['element_type']!r} is not one of "
                                 f"{ELEMENT_TYPES}")
            rows.append({"id": prompt_id, "caption": record["prompt"], **qa})
    return inputs, rows


def write(out_dir, seed: int = DEFAULT["seed"], n: int = DEFAULT["n"], stream: str = DEFAULT["stream"],
          split: str = DEFAULT["split"]) -> list[Path]:
    """Write the two files into out_dir (atomically); their paths."""
    from agfsync.core.io import write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in zip(FILES, tifa_files(seed, n, stream, split)):
        path = out / name
        write_text(path, json.dumps(content, indent=1) + "\n")
        paths.append(path)
    return paths
