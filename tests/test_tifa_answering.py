"""TIFA's official answering protocol (eval.tifa.answering: tifa, agfsync.models.tifa_answer) on
the tiny models: tifascore's prompt, LAVIS' generation settings, the SBERT mapping, the
per-image rows and the result's disagreement with our choice scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import on_tiny_models, settings

from agfsync.core.io import read_jsonl, write_jsonl
from agfsync.models import tifa_answer
from agfsync.models.tifa_answer import SentenceEmbedder, TifaAnswerer, load_sentence_embedder, tifa_prompt

QA = [{"question": "is there a car?", "choices": ["yes", "no"], "answer": "yes", "element_type": "object"},
      {"question": "what color is the car?", "choices": ["red", "blue", "green"], "answer": "red",
       "element_type": "color"},
      {"question": "how many wheels are there?", "choices": ["2", "3", "4", "6"], "answer": "4",
       "element_type": "counting"}]


def test_prompt_and_generation_settings_are_tifascores():
    """tifascore/vqa_models.py BLIP2.vqa and LAVIS Blip2T5.generate's defaults."""
    assert tifa_prompt("what color is the car?", ["red", "blue", "green"]) == (
        "Answer the multiple-choice question. Question: what color is the car? Choices: red, blue, green Answer:")
    assert (tifa_answer.NUM_BEAMS, tifa_answer.MAX_NEW_TOKENS, tifa_answer.MIN_LENGTH) == (5, 30, 1)
    assert tifa_answer.SBERT == "sentence-transformers/all-mpnet-base-v2"


@pytest.fixture(scope="module")
def embedder(tiny_models):
    return load_sentence_embedder(str(tiny_models / "sbert"), torch.device("cpu"))


def test_sentence_embedding_is_the_masked_mean_normalised(embedder):
    """Padding must not move a sentence's embedding (the mean runs over the attention mask only),
    and embeddings are unit vectors; the reference is the model's token states averaged by hand."""
    alone = embedder.embed(["red"])[0]
    batched = embedder.embed(["red", "a large blue circle left of two small squares"])[0]
    assert torch.allclose(alone, batched, atol=1e-5)
    assert float(alone.norm()) == pytest.approx(1.0, abs=1e-5)
    encoded = embedder.tokenizer(["red"], return_tensors="pt")
    with torch.no_grad():
        states = embedder.model(**encoded).last_hidden_state[0]
    reference = states.mean(0) / states.mean(0).norm()
    assert torch.allclose(alone, reference, atol=1e-5)


def test_a_choice_is_kept_and_anything_else_goes_to_its_nearest_choice(embedder, monkeypatch):
    answerer = TifaAnswerer(None, None, torch.device("cpu"), embedder)
    assert answerer.to_choice("blue", ["red", "blue"]) == "blue"  # literally a choice: no embedding
    # otherwise the choice of highest cosine: for a text equal to a choice up to case, that choice
    assert embedder.nearest("blue", ["red", "blue", "green"]) == "blue"
    calls = []
    monkeypatch.setattr(embedder, "nearest", lambda text, choices: calls.append((text, choices)) or choices[-1])
    assert answerer.to_choice("Blue.", ["red", "blue"]) == "blue"  # "Blue." is not a choice (exact match only)
    assert calls == [("Blue.", ["red", "blue"])]


@pytest.fixture(scope="module")
def blip2(tiny_models):
    from agfsync.models.loaders import load_blip2

    return load_blip2(str(tiny_models / "blip2"), device=torch.device("cpu"))


def test_batched_beam_search_equals_one_question_at_a_time(blip2, embedder):
    """All of an image's questions go through one padded generate(); each answer must equal the
    one generated for its question alone with the same settings."""
    from PIL import Image

    model, processor, device = blip2
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    answerer = TifaAnswerer(model, processor, device, embedder)
    batched = answerer.generate(image, QA)
    alone = [answerer.generate(image, [q])[0] for q in QA]
    assert batched == alone
    free, mapped = answerer.answer(image, QA)
    assert free == batched
    assert all(m in q["choices"] for m, q in zip(mapped, QA))


@pytest.fixture
def cfg(demo_config, tiny_models):
    cfg = on_tiny_models(demo_config, tiny_models)
    cfg["eval"]["tifa"]["answering"] = "tifa"
    return cfg


def test_official_answering_rows_and_the_result_disagreement(cfg, tmp_path, blip2, embedder):
    from agfsync.models.vqa import VQAScorer
    from agfsync.stages.evaluate import generate_eval_shard, score_tifa_shard
    from agfsync.core.shards import Shard
    from agfsync.stages.tifa_results import tifa_result

    records = [{"id": f"coco_{i}", "prompt": "a red car", "group": "coco", "qa": QA} for i in range(2)]
    write_jsonl(tmp_path / "tifa.jsonl", records)
    generate_eval_shard(settings(cfg, "eval_generate", model="sd15"), "sd15", "tifa", "base", records,
                        tmp_path / "tifa.tar", progress=False)
    s = settings(cfg, "eval_score", bench="tifa")
    assert s.eval.tifa.answering == "tifa"
    score_tifa_shard(s.scores, tmp_path / "tifa.tar", tmp_path / "tifa.jsonl", tmp_path / "rows.jsonl",
                     device=s.device, progress=False, tifa=s.eval.tifa)
    rows = read_jsonl(tmp_path / "rows.jsonl")
    model, processor, device = blip2
    official = TifaAnswerer(model, processor, device, embedder)
    ours = VQAScorer(model, processor, device, method="fast")
    with Shard(tmp_path / "tifa.tar") as shard:
        for row, image_row in zip(rows, shard.rows, strict=True):
            image = shard.image(image_row)
            free, mapped = official.answer(image, QA)
            assert row["free_form"] == free and row["answers"] == mapped
            assert row["correct"] == [m == q["answer"] for m, q in zip(mapped, QA)]
            assert row["choices_answers"] == ours.answer([image], QA)[0]
            assert row["tifa"] == pytest.approx(np.mean(row["correct"]))

    # the result: the official protocol named, and the disagreement counted over every question
    synthetic = [{"prompt_id": "a", "group": "coco", "element_types": ["object", "color"], "correct": [True, False],
                  "answers": ["yes", "red"], "choices_answers": ["yes", "blue"]},
                 {"prompt_id": "b", "group": "coco", "element_types": ["object", "color"], "correct": [False, True],
                  "answers": ["no", "red"], "choices_answers": ["yes", "red"]}]
    tuned = [dict(r, choices_answers=r["answers"]) for r in synthetic]
    result = tifa_result("sd15", settings(cfg, "eval_metric", model="sd15"), "0" * 16,
                         {"base": synthetic, "agfsync": tuned})
    assert result["implementation"]["answering"].startswith("tifa: the official protocol (tifascore)")
    assert result["implementation"]["sbert"] == cfg["eval"]["tifa"]["sbert"]
    assert result["variants"]["base"]["details"]["answering_disagreement"] == {
        "questions": 4, "disagree": 2, "rate": 0.5, "compared_with": "choices"}
    assert result["variants"]["agfsync"]["details"]["answering_disagreement"]["rate"] == 0.0


def test_choices_answering_is_recorded_as_ours(cfg):
    from agfsync.stages.tifa_results import tifa_result

    cfg["eval"]["tifa"]["answering"] = "choices"
    rows = [{"prompt_id": "a", "group": "coco", "element_types": ["object"], "correct": [True]}]
    result = tifa_result("sd15", settings(cfg, "eval_metric", model="sd15"), "0" * 16, {"base": rows, "agfsync": rows})
    assert result["implementation"]["answering"].startswith("choices: ours")
    assert "sbert" not in result["implementation"]
    assert "answering_disagreement" not in result["variants"]["base"]["details"]


def test_bad_answering_value_names_the_key(cfg):
    from agfsync.core.config import ConfigError, check_config

    cfg["eval"]["tifa"]["answering"] = "generate"
    with pytest.raises(ConfigError, match=r"eval\.tifa\.answering"):
        check_config(cfg)


def test_the_sentence_embedder_is_downloaded_only_for_the_official_answering(repo):
    from agfsync.core import dag
    from agfsync.core.config import load_config

    paper = load_config(repo / "config" / "config.yaml")
    assert dag.eval_score_values(paper, "tifa")[-1] == "sentence-transformers/all-mpnet-base-v2"
    paper["eval"]["tifa"]["answering"] = "choices"
    assert "sentence-transformers/all-mpnet-base-v2" not in dag.eval_score_values(paper, "tifa")
    assert {"eval.tifa.answering", "eval.tifa.sbert"} <= set(dag.DECLARED["eval_score:tifa"])
