"""AI-feedback scores and pair selection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from agfsync.models import loaders as models
from helpers import settings

from agfsync.core.pairs import select_pair, select_pairs, weighted_total, with_total
from agfsync.models.vqa import VQAScorer, authors_rule_correct

WEIGHTS = {"vqa": 0.35, "clip": 0.55, "aesthetic": 0.10}
VQA_ONLY = {"vqa": 1.0, "clip": 0.0, "aesthetic": 0.0}  # total == the vqa score, exactly


def random_images(n, size=48, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def blip2(tiny_models):
    """Tiny BLIP-2 whose greedy answers are always "yes" or "no" (agfsync.demo.toy)."""
    from agfsync.demo.toy import force_yes_no_head

    model, processor, device = models.load_blip2(str(tiny_models / "blip2"), device="cpu")
    force_yes_no_head(model, processor, random_images(8), QUESTIONS)
    return model, processor, device


QUESTIONS = [{"question": q, "choices": ["yes", "no"], "answer": "yes"} for q in (
    "is there a fox?", "is the fox red?", "is it snowing?", "are there three ducks?", "is this a photo?",
    "is the sky blue?")]


def test_vqa_fast_path_agrees_with_one_generate_per_question(blip2):
    model, processor, device = blip2
    images = random_images(8)
    fast = VQAScorer(model, processor, device, method="fast", batch_size=7)  # awkward batch: chunks split images
    generated = VQAScorer(model, processor, device).generate_answers(images, QUESTIONS)  # greedy, BLIP-2's prompt
    generated = [[text.split()[0] for text in row] for row in generated]  # the first generated word
    decided = fast.answer(images, QUESTIONS)
    assert {a for row in generated for a in row} == {"yes", "no"}  # both answers occur: the test can fail
    assert decided == generated


def test_vqa_runs_the_vision_tower_once_per_image(blip2):
    model, processor, device = blip2
    seen = []
    handle = model.vision_model.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append((args or (kwargs["pixel_values"],))[0].shape[0]), with_kwargs=True)
    try:
        VQAScorer(model, processor, device).answer(random_images(8), QUESTIONS)
    finally:
        handle.remove()
    assert seen == [8]  # one call, 8 images, for 48 (image, question) pairs


def test_vqa_score_is_percent_correct(blip2):
    model, processor, device = blip2
    scorer = VQAScorer(model, processor, device)
    images = random_images(4, seed=3)
    answers = scorer.answer(images, QUESTIONS)
    scores, correct = scorer.score(images, QUESTIONS)
    expected = [100.0 * sum(a == "yes" for a in row) / len(QUESTIONS) for row in answers]
    assert scores.tolist() == pytest.approx(expected) and correct.shape == (4, 6)


def test_multiple_choice_picks_the_most_likely_choice(tiny_models):
    """Teacher-forced choice likelihoods equal the model's own loss over the choice tokens."""
    model, processor, device = models.load_blip2(str(tiny_models / "blip2"), device="cpu")
    scorer = VQAScorer(model, processor, device)
    image = random_images(1, seed=5)[0]
    question = {"question": "what color is the fox?", "choices": ["red", "grey fox", "white"], "answer": "red"}
    picked = scorer.answer([image], [question])[0][0]
    totals = []
    for choice in question["choices"]:
        inputs = processor(images=image, text=f"Question: {question['question']} Answer:", return_tensors="pt")
        labels = processor.tokenizer(choice, return_tensors="pt").input_ids
        with torch.no_grad():
            loss = model(**inputs, labels=labels).loss
        totals.append(-float(loss) * labels.shape[1])  # mean NLL x tokens = total log-likelihood
    assert picked == question["choices"][int(np.argmax(totals))]


def test_multiple_choice_length_normalised_likelihood_is_the_mean_per_token(tiny_models):
    """scores.vqa.choice_likelihood mean: the choice whose tokens have the highest mean
    log-likelihood (the model's own mean loss), where sum favours the short choices."""
    model, processor, device = models.load_blip2(str(tiny_models / "blip2"), device="cpu")
    by_sum, by_mean = VQAScorer(model, processor, device), VQAScorer(model, processor, device, choice_likelihood="mean")
    question = {"question": "what is in the picture?", "answer": "a fox",
                "choices": ["a fox", "a small grey fox sitting in deep snow under a tree", "snow"]}
    picks = []
    for image in random_images(6, seed=9):
        mean_loglik = []
        for choice in question["choices"]:
            inputs = processor(images=image, text=f"Question: {question['question']} Answer:", return_tensors="pt")
            labels = processor.tokenizer(choice, return_tensors="pt").input_ids
            with torch.no_grad():
                mean_loglik.append(-float(model(**inputs, labels=labels).loss))
        picked = by_mean.answer([image], [question])[0][0]
        assert picked == question["choices"][int(np.argmax(mean_loglik))]
        picks.append((by_sum.answer([image], [question])[0][0], picked))
    assert any(s != m for s, m in picks), picks  # the two rules differ here: the test can fail
    with pytest.raises(ValueError, match="unknown choice likelihood 'max'"):
        VQAScorer(model, processor, device, choice_likelihood="max")


def test_vqa_authors_method_asks_with_their_prompt_text_and_generation_limit(blip2):
    """Their scoring script: "Question: {q} Choices:['yes','no'] Answer:", greedy, up to 512
    new tokens, wrong when the answer contains "no" or "b"."""
    model, processor, device = blip2
    texts, limits = [], []

    class SpyProcessor:
        def __call__(self, *args, **kwargs):
            texts.append(kwargs["text"])
            return processor(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(processor, name)

    def spy_generate(**kwargs):
        limits.append((kwargs["max_new_tokens"], kwargs["do_sample"]))
        return original(**{**kwargs, "max_new_tokens": 3})  # the tiny model never stops by itself

    original = model.generate
    scorer = VQAScorer(model, processor, device, method="authors")
    scorer.processor = SpyProcessor()
    model.generate = spy_generate
    try:
        correct = scorer.correct(random_images(2), QUESTIONS[:2])
    finally:
        del model.generate
    assert texts == ["Question: is there a fox? Choices:['yes','no'] Answer:",
                     "Question: is the fox red? Choices:['yes','no'] Answer:"] * 2
    assert limits == [(512, False)] * 4
    assert correct.shape == (2, 2) and correct.dtype == bool


def test_authors_rule():
    assert authors_rule_correct("yes") and authors_rule_correct("yes, it is")
    assert not authors_rule_correct("no") and not authors_rule_correct("a blue bird")  # 'b' counts as wrong


class TensorFeatures(torch.nn.Module):
    """torchmetrics 1.9 expects get_*_features to return tensors; transformers 5 returns an
    output object whose pooler_output is the projected feature (docs/NOTES.md)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs):
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return self.model.get_text_features(*args, **kwargs).pooler_output


def test_clip_score_equals_torchmetrics_definition(tiny_models):
    from torchmetrics.functional.multimodal import clip_score

    from agfsync.models.clip_score import CLIPScorer

    model, processor, device = models.load_clip(str(tiny_models / "clip"), device="cpu")
    scorer = CLIPScorer(model, processor, device, gamma=100)
    images = random_images(4, size=40, seed=7)
    captions = ["a red fox curled up in fresh snow", "three ducklings on a calm pond"]
    for caption in captions:
        ours = scorer.score(images, caption)
        for image, value in zip(images, ours):
            tensor = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)
            reference = clip_score(tensor, caption, model_name_or_path=lambda: (TensorFeatures(model), processor))
            assert value == pytest.approx(float(reference), abs=1e-4)
    # The clamp: negating the text projection negates every cosine, so whatever the sign of
    # the random weights' cosines, one of the two runs has negatives, scored 0.
    raw = 100 * (scorer.image_features(images) @ scorer.text_features(captions[:1]).T)[:, 0].numpy()
    with torch.no_grad():
        model.text_projection.weight.neg_()
    try:
        flipped = scorer.score(images, captions[0])
    finally:
        with torch.no_grad():
            model.text_projection.weight.neg_()
    assert min(raw.min(), -raw.max()) < 0
    np.testing.assert_allclose(scorer.score(images, captions[0]), np.clip(raw, 0, None), atol=1e-4)
    np.testing.assert_allclose(flipped, np.clip(-raw, 0, None), atol=1e-4)


def test_clip_truncates_to_77_tokens_keeping_end_of_text(tiny_models):
    from agfsync.models.clip_score import CLIPScorer

    model, processor, device = models.load_clip(str(tiny_models / "clip"), device="cpu")
    scorer = CLIPScorer(model, processor, device)
    long_caption = " ".join(["meadow", "harbor"] * 60)  # 120 words, 1 token each
    tok = processor.tokenizer
    ids = tok(long_caption, truncation=True, max_length=77).input_ids
    assert len(ids) == 77 and ids[-1] == tok.eos_token_id
    first_75_words = " ".join(long_caption.split()[:75])  # + start + end = 77 tokens
    assert torch.allclose(scorer.text_features([long_caption]), scorer.text_features([first_75_words]), atol=1e-6)
    assert len(long_caption) > 77 * 5  # a character cut (the authors' bug) would keep only ~11 words


def test_aesthetic_score_is_ten_times_the_head_on_normalised_embeddings(tiny_models):
    from agfsync.models.aesthetic import AestheticScorer

    model, image_processor, device = models.load_aesthetic(
        str(tiny_models / "aesthetic/backbone"), str(tiny_models / "aesthetic/head.pth"), device="cpu")
    images = random_images(3, seed=9)
    ours = AestheticScorer(model, image_processor, device).score(images)
    with torch.no_grad():
        pixels = image_processor(images=images, return_tensors="pt").pixel_values
        features = model.clip.get_image_features(pixel_values=pixels)
        features = getattr(features, "pooler_output", features)
        manual = 10 * model.head(features / features.norm(dim=-1, keepdim=True)).squeeze(-1)
    assert ours.tolist() == pytest.approx(manual.tolist(), abs=1e-5)


def test_weighted_total_golden():
    assert weighted_total({"vqa": 80.0, "clip": 30.0, "aesthetic": 55.0}, WEIGHTS) == pytest.approx(
        0.35 * 80 + 0.55 * 30 + 0.10 * 55)  # 28 + 16.5 + 5.5 = 50.0
    assert weighted_total({"vqa": 80.0, "clip": 30.0, "aesthetic": 55.0}, WEIGHTS) == pytest.approx(50.0)


def rows(totals, **extra):
    """Score rows as candidates_score writes them (sub-scores, no total) whose total under
    VQA_ONLY is `totals`."""
    out = []
    for k, total in enumerate(totals):
        out.append({"prompt_id": "p", "candidate": k, "image": f"images/p.{k}.png", "seed": k, "vqa": total,
                    "clip": 30.0, "aesthetic": 50.0, **extra})
    return out


@pytest.mark.parametrize(
    "totals, min_margin, expected",
    [
        ([10, 40, 20, 30], 0.0, (1, 0, 30.0)),
        ([10, 40, 20, 40], 0.0, "tie"),           # two best
        ([10, 40, 10, 30], 0.0, "tie"),           # two worst
        ([10, 12, 11, 11.5], 5.0, "small_margin"),
        ([10, 15, 11, 11.5], 5.0, (1, 0, 5.0)),   # margin exactly at the threshold is kept
        ([10, 40, 20], 0.0, "missing_scores"),    # only 3 of 4 candidates
        ([10, 40, 20, float("nan")], 0.0, "missing_scores"),
    ],
)
def test_select_pair(totals, min_margin, expected):
    pair, reason = select_pair([with_total(r, VQA_ONLY) for r in rows(totals)], 4, min_margin)
    if isinstance(expected, str):
        assert pair is None and reason == expected
    else:
        assert reason is None
        assert (pair["winner"]["candidate"], pair["loser"]["candidate"], pair["margin"]) == expected


def test_select_pair_missing_subscore():
    broken = rows([10, 40, 20, 30])
    del broken[2]["clip"]
    assert "total" not in with_total(broken[2], VQA_ONLY)
    assert select_pair([with_total(r, VQA_ONLY) for r in broken], 4, 0.0) == (None, "missing_scores")
    broken[2]["clip"] = None
    assert select_pair([with_total(r, VQA_ONLY) for r in broken], 4, 0.0) == (None, "missing_scores")


def test_with_total_is_computed_from_the_subscores_and_the_weights():
    row = {"prompt_id": "p", "candidate": 0, "vqa": 80.0, "clip": 30.0, "aesthetic": 55.0, "total": 999.0}
    out = with_total(row, WEIGHTS)
    assert out["total"] == weighted_total(row, WEIGHTS) == 0.35 * 80.0 + 0.55 * 30.0 + 0.10 * 55.0  # not the stale 999
    assert row["total"] == 999.0  # the input row is left as it was


def test_select_pairs_gathers_shards(demo_config, tmp_path):
    cfg = demo_config
    cfg["candidates"]["num_per_prompt"] = 4
    cfg["scores"]["weights"] = VQA_ONLY
    qa = [{"id": p, "prompt": f"prompt {p}", "category": "Animals"} for p in ("a", "b", "c")]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    shard0 = [dict(r, prompt_id="a") for r in rows([1, 9, 5, 3])] + [dict(r, prompt_id="b") for r in rows([2, 2, 1, 0])]
    shard1 = [dict(r, prompt_id="c") for r in rows([7, 6, 8, 5])]
    for i, shard in enumerate((shard0, shard1)):
        (tmp_path / f"s{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shard))
    summary = select_pairs(settings(cfg, "pairs_select"), [tmp_path / "s0.jsonl", tmp_path / "s1.jsonl"], tmp_path / "qa.jsonl",
                           ["shard-00000.tar", "shard-00001.tar"], tmp_path / "pairs.jsonl", tmp_path / "sum.json")
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [(p["prompt_id"], p["winner"]["candidate"], p["loser"]["candidate"], p["margin"], p["winner"]["shard"])
            for p in pairs] == [("a", 1, 0, 8.0, "shard-00000.tar"), ("c", 2, 3, 3.0, "shard-00001.tar")]
    assert summary["dropped"] == {"missing_scores": 0, "tie": 1, "small_margin": 0}
    assert summary["num_pairs"] == 2 and summary["margin"]["mean"] == 5.5
    assert summary["scores"]["total"]["count"] == 12 and math.isclose(summary["winner_mean"]["total"], 8.5)
    assert summary["weights"] == VQA_ONLY  # the weights the totals were computed with


def test_the_negative_control_swaps_winner_and_loser_and_equal_margins_summarise(demo_config, tmp_path):
    cfg = demo_config
    cfg["candidates"]["num_per_prompt"] = 4
    cfg["scores"]["weights"] = VQA_ONLY
    qa = [{"id": p, "prompt": f"prompt {p}", "category": "Animals"} for p in ("a", "c")]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    shard = [dict(r, prompt_id="a") for r in rows([1, 9, 5, 3])] + [dict(r, prompt_id="c") for r in rows([7, 6, 9, 1])]
    (tmp_path / "s0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shard))
    out = {}
    for swap in (False, True):
        cfg["pairs"]["swap"] = swap
        summary = select_pairs(settings(cfg, "pairs_select"), [tmp_path / "s0.jsonl"], tmp_path / "qa.jsonl",
                               ["shard-00000.tar"], tmp_path / f"pairs-{swap}.jsonl", tmp_path / f"sum-{swap}.json")
        pairs = [json.loads(line) for line in (tmp_path / f"pairs-{swap}.jsonl").read_text().splitlines()]
        out[swap] = [(p["prompt_id"], p["winner"]["candidate"], p["loser"]["candidate"], p["margin"]) for p in pairs]
        assert summary["swapped"] is swap
        # both margins are 8: the margin histogram of identical values still has 20 bins
        assert len(summary["margin"]["histogram"]["counts"]) == 20 and summary["margin"]["std"] == 0.0
    assert out[False] == [("a", 1, 0, 8.0), ("c", 2, 3, 8.0)]
    assert out[True] == [("a", 0, 1, -8.0), ("c", 3, 2, -8.0)]


def test_pairs_follow_the_weights_not_a_stored_total(demo_config, tmp_path):
    """The total is pairs_select's: the same score files give other pairs under other
    weights, and a `total` left in a scores file (written before the move) is ignored."""
    cfg = demo_config
    cfg["candidates"]["num_per_prompt"] = 2
    (tmp_path / "qa.jsonl").write_text(json.dumps({"id": "a", "prompt": "prompt a", "category": "Animals"}) + "\n")
    scores = [{"prompt_id": "a", "candidate": 0, "image": "images/a.0.png", "seed": 0, "vqa": 90.0, "clip": 10.0,
               "aesthetic": 50.0, "total": 0.0},
              {"prompt_id": "a", "candidate": 1, "image": "images/a.1.png", "seed": 1, "vqa": 10.0, "clip": 60.0,
               "aesthetic": 50.0, "total": 100.0}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scores))

    def winner(weights):
        cfg["scores"]["weights"] = weights
        select_pairs(settings(cfg, "pairs_select"), [tmp_path / "s.jsonl"], tmp_path / "qa.jsonl", ["shard-00000.tar"], tmp_path / "pairs.jsonl",
                     tmp_path / "sum.json")
        (pair,) = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
        assert pair["winner"]["total"] == weighted_total(scores[pair["winner"]["candidate"]], weights)
        assert pair["margin"] == pair["winner"]["total"] - pair["loser"]["total"]
        assert json.loads((tmp_path / "sum.json").read_text())["weights"] == weights
        return pair["winner"]["candidate"]

    assert winner(WEIGHTS) == 0  # 0.35*90 + 0.55*10 + 5 = 42 against 0.35*10 + 0.55*60 + 5 = 41.5
    assert winner({"vqa": 0.1, "clip": 0.8, "aesthetic": 0.1}) == 1


def test_cli_candidates_score_pairs_end_to_end(tiny_models, tmp_path):
    import yaml

    from agfsync.cli import main
    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    cfg["models"]["sd15"]["pretrained"] = str(tiny_models / "sd1")
    cfg["scores"]["vqa"]["model"] = str(tiny_models / "blip2")
    cfg["scores"]["clip"]["model"] = str(tiny_models / "clip")
    cfg["scores"]["aesthetic"] = {"backbone": str(tiny_models / "aesthetic/backbone"),
                                  "head": str(tiny_models / "aesthetic/head.pth")}
    cfg["candidates"].update({"num_per_prompt": 3, "shard_size": 2})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    qa = [{"id": f"animals-{i:010d}", "category": "Animals", "prompt": f"a fox number {i}",
           "qa": [{"question": "is there a fox?", "choices": ["yes", "no"], "answer": "yes", "element": "fox",
                   "element_type": "animal"}]} for i in range(3)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    c, q = str(tmp_path / "c.yaml"), str(tmp_path / "qa.jsonl")
    for shard in (0, 1):
        assert main(["candidates", "--config", c, "--model", "sd15", "--qa", q, "--shard", str(shard),
                     "--out", str(tmp_path / f"s{shard}.tar")]) == 0
        assert main(["score", "--config", c, "--shard", str(tmp_path / f"s{shard}.tar"), "--qa", q,
                     "--out", str(tmp_path / f"s{shard}.jsonl")]) == 0
    assert main(["pairs", "--config", c, "--scores", str(tmp_path / "s0.jsonl"), str(tmp_path / "s1.jsonl"),
                 "--shards", str(tmp_path / "s0.tar"), str(tmp_path / "s1.tar"), "--qa", q,
                 "--out", str(tmp_path / "pairs.jsonl"), "--summary", str(tmp_path / "sum.json")]) == 0
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert summary["num_prompts_scored"] == 3
    assert summary["num_pairs"] + sum(summary["dropped"].values()) == 3
    scores = [json.loads(line) for line in (tmp_path / "s0.jsonl").read_text().splitlines()]
    assert len(scores) == 6 and all(0 <= r["vqa"] <= 100 and r["clip"] >= 0 for r in scores)
    assert not [r for r in scores if "total" in r]  # the weighted total is the pairs stage's
    assert main(["candidates", "--config", c, "--model", "sd99", "--qa", q, "--shard", "0",
                 "--out", str(tmp_path / "x.tar")]) == 2
