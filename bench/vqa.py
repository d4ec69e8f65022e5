"""VQA scoring: ours (vision tower and Q-Former once per image, all of a prompt's
(image, question) pairs batched, yes/no by one decoder step) vs the authors' approach
(one generate() call per (image, question)), same tiny BLIP-2, images and questions.
Prints questions/s, the ratio, and whether every yes/no decision is identical.

    python bench/vqa.py [--images 8] [--questions 6] [--prompts 4]

The tiny model's LM head is restricted to "yes"/"no" (agfsync.demo.toy.force_yes_no_head)
so that generate() answers yes or no and the decisions can be compared one by one.
Target (issue 3): >= 5x with identical yes/no decisions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_of, save  # noqa: E402

from agfsync.models.loaders import load_blip2  # noqa: E402
from agfsync.demo.toy import force_yes_no_head  # noqa: E402
from agfsync.demo.tiny_models import build_all  # noqa: E402
from agfsync.models.vqa import VQAScorer  # noqa: E402

QUESTIONS = ["is there a fox?", "is the fox red?", "is it snowing?", "are there three ducks?", "is this a photo?",
             "is the sky blue?", "is there a tree?", "is the water calm?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="candidates per prompt")
    parser.add_argument("--questions", type=int, default=6, help="questions per prompt")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", help="tiny models dir (built into a temp dir if not given)")
    args = parser.parse_args()

    models_dir = Path(args.models) if args.models else Path(tempfile.mkdtemp()) / "tiny"
    if not args.models:
        build_all(models_dir, families=("blip2",))
    model, processor, device = load_blip2(str(models_dir / "blip2"))
    rng = np.random.default_rng(0)
    prompts = [[Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(args.images)]
               for _ in range(args.prompts)]
    qa = [{"question": q, "choices": ["yes", "no"], "answer": "yes"} for q in QUESTIONS[: args.questions]]
    force_yes_no_head(model, processor, prompts[0], qa)
    fast = VQAScorer(model, processor, device, method="fast")
    # the authors' approach, one greedy generate() per (image, question), on BLIP-2's own VQA
    # prompt (ours) so that the decisions can be compared one by one
    slow = VQAScorer(model, processor, device).generate_answers

    ours_answers = [fast.answer(images, qa) for images in prompts]
    generated = [[[text.split()[0] for text in row] for row in slow(images, qa)] for images in prompts]
    decisions = sum(len(row) for answers in ours_answers for row in answers)
    identical = sum(a == b for x, y in zip(ours_answers, generated) for rx, ry in zip(x, y) for a, b in zip(rx, ry))
    yes_share = np.mean([a == "yes" for answers in ours_answers for row in answers for a in row])

    with torch.no_grad():
        ours_s = best_of(lambda: [fast.answer(images, qa) for images in prompts], args.repeats)
        baseline_s = best_of(lambda: [slow(images, qa) for images in prompts], args.repeats)
    result = {
        "benchmark": "VQA scoring, questions/s ((image, question) pairs per second)",
        "settings": {k: v for k, v in vars(args).items() if k != "models"},
        "baseline_generate_per_question_per_s": round(decisions / baseline_s, 1),
        "ours_fast_per_s": round(decisions / ours_s, 1),
        "ratio": round(baseline_s / ours_s, 2),
        "target_ratio": 5.0,
        "yes_no_decisions": decisions,
        "identical_decisions": int(identical),
        "share_answered_yes": round(float(yes_share), 3),
    }
    save("vqa_cpu" if not torch.cuda.is_available() else "vqa_gpu", result)


if __name__ == "__main__":
    main()
