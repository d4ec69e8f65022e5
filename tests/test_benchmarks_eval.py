"""Evaluation building blocks: HPS v2 protocol and TIFA files and scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from agfsync.models import hps

from agfsync.core import tifa
from agfsync.core.io import DataError


def test_resize_max_pad_keeps_aspect_and_centres():
    image = Image.new("RGB", (200, 100), (255, 0, 0))  # wide: width -> 224, height -> 112
    out = np.asarray(hps.resize_max_pad(image, 224))
    assert out.shape == (224, 224, 3)
    assert (out[:56] == 0).all() and (out[56 + 112:] == 0).all()  # 56 rows of padding above and below
    assert (out[56:168, :, 0] == 255).all() and (out[56:168, :, 1:] == 0).all()


def test_preprocess_normalises_with_openai_statistics():
    pixels = hps.preprocess([Image.new("RGB", (10, 10), (255, 255, 255))], 8)
    assert pixels.shape == (1, 3, 8, 8)
    expected = (1.0 - np.asarray(hps.OPENAI_MEAN)) / np.asarray(hps.OPENAI_STD)
    assert np.allclose(pixels[0, :, 4, 4], expected, atol=1e-6)


def test_aggregate_is_the_mean_of_80_image_chunk_means():
    rng = np.random.default_rng(0)
    photo = list(rng.normal(27, 1, 800))
    anime = list(range(160))  # chunk means 39.5 and 119.5
    result = hps.aggregate({"photo": photo, "anime": anime})
    assert result["styles"]["anime"] == {"mean": 79.5, "std": 40.0, "num_chunks": 2, "num_images": 160}
    chunk_means = [np.mean(photo[i:i + 80]) for i in range(0, 800, 80)]
    assert result["styles"]["photo"]["mean"] == pytest.approx(np.mean(chunk_means))
    assert result["styles"]["photo"]["num_chunks"] == 10
    assert result["average"] == pytest.approx((79.5 + np.mean(chunk_means)) / 2)
    with pytest.raises(ValueError, match="style 'paintings' has no scores"):
        hps.aggregate({"paintings": []})


def test_hps_scorer_is_100_times_the_cosine(tiny_models):
    from agfsync.models.loaders import load_hps

    model, tokenizer, device = load_hps("agfsync-tiny-ViT", str(tiny_models / "hps/HPS_tiny.pt"),
                                        model_config=str(tiny_models / "hps/agfsync-tiny-ViT.json"), device="cpu")
    scorer = hps.HPSScorer(model, tokenizer, device, version="tiny")
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 60, 3), dtype=np.uint8)) for i in range(2)]
    ours = scorer.score(images, "a photo of a cat")
    with torch.no_grad():
        img = model.encode_image(torch.from_numpy(hps.preprocess(images, 32)))
        txt = model.encode_text(tokenizer(["a photo of a cat"]))
        manual = 100 * torch.nn.functional.cosine_similarity(img, txt)
    assert ours.tolist() == pytest.approx(manual.tolist(), abs=1e-4)


TIFA_RECORDS = [
    {"id": "coco_1", "caption": "a surfer on a wave", "question": "is there a surfer?", "choices": ["yes", "no"],
     "answer": "yes", "element_type": "animal/human", "element": "surfer"},
    {"id": "coco_1", "caption": "a surfer on a wave", "question": "what is the surfer on?",
     "choices": ["wave", "sand", "road"], "answer": "wave", "element_type": "object", "element": "wave"},
    {"id": "parti_2", "caption": "a red car", "question": "what color is the car?", "choices": ["red", "blue"],
     "answer": "red", "element_type": "color", "element": "red"},
]


def test_tifa_questions_group_by_prompt(tmp_path):
    path = tmp_path / "tifa_v1.0_question_answers.json"
    path.write_text(json.dumps(TIFA_RECORDS))
    prompts = tifa.load_questions(path)
    assert [(p["id"], p["prompt"], len(p["qa"])) for p in prompts] == [("coco_1", "a surfer on a wave", 2),
                                                                         ("parti_2", "a red car", 1)]
    assert prompts[0]["qa"][1] == {"question": "what is the surfer on?", "choices": ["wave", "sand", "road"],
                                   "answer": "wave", "element_type": "object", "element": "wave"}


def test_tifa_bad_records_name_file_and_record(tmp_path):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([TIFA_RECORDS[0], {**TIFA_RECORDS[2], "answer": "green"}]))
    with pytest.raises(DataError, match=r"qa.json, record 1 \(id parti_2\): answer 'green' is not among the choices"):
        tifa.load_questions(path)
    path.write_text(json.dumps([{"id": "x", "caption": "c"}]))
    with pytest.raises(DataError, match=r"qa.json, record 0: lacks question, choices, answer, element_type"):
        tifa.load_questions(path)


def test_tifa_score_golden():
    result = tifa.score({"coco_1": [("animal/human", True), ("object", False)], "parti_2": [("color", True)]})
    assert result["score"] == pytest.approx((0.5 + 1.0) / 2)  # mean over prompts of per-image accuracy
    assert result["by_element_type"] == {"animal/human": {"accuracy": 1.0, "num_questions": 1},
                                         "color": {"accuracy": 1.0, "num_questions": 1},
                                         "object": {"accuracy": 0.0, "num_questions": 1}}
    assert (result["num_prompts"], result["num_questions"]) == (2, 3)
