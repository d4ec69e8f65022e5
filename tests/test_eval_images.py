"""Evaluation images and their per-image scores on tiny models: base and AGFSync differ
only by the UNet, and each scorer writes what the metric files read."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from helpers import on_tiny_models, settings

from agfsync.core.io import read_jsonl, write_jsonl
from agfsync.core.shards import Shard
from agfsync.stages import evaluate
from agfsync.stages.evaluate import (features_mjhq_reference, features_mjhq_shard, load_features, score_hps_shard,
                                     score_tifa_shard)

RECORDS = [{"id": f"photo-{i:03d}", "prompt": p, "group": "photo"} for i, p in enumerate(
    ["a red bicycle against a wall", "a bowl of ramen", "fog over a forest"])]


@pytest.fixture
def cfg(demo_config, tiny_models):
    return on_tiny_models(demo_config, tiny_models)


def generate_eval_shard(cfg: dict, model: str, *args, **kwargs) -> dict:
    return evaluate.generate_eval_shard(settings(cfg, "eval_generate", model=model), model, *args, **kwargs)


def images(path) -> dict:
    with Shard(path) as shard:
        return {r["prompt_id"]: np.asarray(shard.image(r)) for r in shard.rows}


@pytest.mark.parametrize("model, family", [("sd15", "sd1"), ("sdxl", "sdxl")])
def test_variants_differ_only_by_the_unet(cfg, tiny_models, tmp_path, model, family):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_models / family / "unet")
    unet.save_pretrained(tmp_path / "same")  # the base UNet saved as a "fine-tuned" one
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    unet.save_pretrained(tmp_path / "moved")
    generate_eval_shard(cfg, model, "hpsv2", "base", RECORDS, tmp_path / "base.tar", progress=False)
    generate_eval_shard(cfg, model, "hpsv2", "agfsync", RECORDS, tmp_path / "same.tar", unet=str(tmp_path / "same"),
                        progress=False)
    generate_eval_shard(cfg, model, "hpsv2", "agfsync", RECORDS, tmp_path / "moved.tar",
                        unet=str(tmp_path / "moved"), progress=False)
    base, same, moved = images(tmp_path / "base.tar"), images(tmp_path / "same.tar"), images(tmp_path / "moved.tar")
    assert list(base) == [r["id"] for r in RECORDS]
    assert all(np.array_equal(base[k], same[k]) for k in base)  # same seeds, sampler, steps: identical images
    assert not any(np.array_equal(base[k], moved[k]) for k in base)
    with Shard(tmp_path / "moved.tar") as shard:
        row = shard.rows[0]
    assert (row["variant"], row["benchmark"], row["candidate"], row["sigma"]) == ("agfsync", "hpsv2", 0, 0.0)


def test_variant_and_unet_must_agree(cfg, tmp_path):
    with pytest.raises(ValueError, match="the fine-tuned UNet is used exactly for 'agfsync'"):
        generate_eval_shard(cfg, "sd15", "tifa", "agfsync", RECORDS, tmp_path / "x.tar")


def test_scorers_write_what_the_metrics_read(cfg, tmp_path):
    from PIL import Image

    tifa_records = [{"id": "coco_1", "prompt": "a red car", "group": "coco", "qa": [
        {"question": "is there a car?", "choices": ["yes", "no"], "answer": "yes", "element_type": "object"},
        {"question": "what color is the car?", "choices": ["red", "blue", "green"], "answer": "red",
         "element_type": "color"}]}]
    write_jsonl(tmp_path / "tifa.jsonl", tifa_records)
    generate_eval_shard(cfg, "sd15", "tifa", "base", tifa_records, tmp_path / "tifa.tar", progress=False)
    s = settings(cfg, "eval_score", bench="tifa")
    score_tifa_shard(s.scores, tmp_path / "tifa.tar", tmp_path / "tifa.jsonl", tmp_path / "tifa_scores.jsonl",
                     device=s.device, progress=False)
    (row,) = read_jsonl(tmp_path / "tifa_scores.jsonl")
    assert row["prompt_id"] == "coco_1" and row["element_types"] == ["object", "color"]
    assert len(row["correct"]) == 2 and row["tifa"] == pytest.approx(np.mean(row["correct"]))
    assert 0 <= row["clip"] <= 100 and 0 <= row["aesthetic"]

    write_jsonl(tmp_path / "hps.jsonl", RECORDS)
    generate_eval_shard(cfg, "sd15", "hpsv2", "base", RECORDS, tmp_path / "hps.tar", progress=False)
    score_hps_shard(settings(cfg, "eval_score", bench="hpsv2").eval.hpsv2, tmp_path / "hps.tar", tmp_path / "hps.jsonl", tmp_path / "hps_scores.jsonl",
                    device=s.device, progress=False)
    assert [r["prompt_id"] for r in read_jsonl(tmp_path / "hps_scores.jsonl")] == [r["id"] for r in RECORDS]

    features_mjhq_shard(settings(cfg, "eval_score", bench="mjhq").eval.mjhq, tmp_path / "hps.tar",
                        tmp_path / "hps.jsonl", tmp_path / "f.npz", device=s.device)
    data = load_features(tmp_path / "f.npz")
    assert data["ids"] == [r["id"] for r in RECORDS] and data["features"].shape == (3, 16)

    # reference features from a zip laid out like mjhq30k_imgs.zip
    import io
    import zipfile

    with zipfile.ZipFile(tmp_path / "ref.zip", "w") as archive:
        for i, record in enumerate(RECORDS):
            buffer = io.BytesIO()
            Image.new("RGB", (48, 48), (40 * i, 90, 200)).save(buffer, format="JPEG")
            archive.writestr(f"{record['group']}/{record['id']}.jpg", buffer.getvalue())
    cfg["eval"]["mjhq"]["images"] = str(tmp_path / "ref.zip")
    features_mjhq_reference(settings(cfg, "eval_reference_mjhq").eval.mjhq, tmp_path / "hps.jsonl", tmp_path / "ref.npz", device="cpu")
    reference = load_features(tmp_path / "ref.npz")
    assert reference["ids"] == data["ids"] and reference["info"]["features"] == "tiny random conv net (16)"


def test_shard_image_missing_from_the_prompt_list_is_named(cfg, tmp_path):
    from agfsync.core.io import DataError

    generate_eval_shard(cfg, "sd15", "hpsv2", "base", RECORDS[:1], tmp_path / "s.tar", progress=False)
    write_jsonl(tmp_path / "prompts.jsonl", RECORDS[1:])
    with pytest.raises(DataError, match=r"shard .*s.tar, record photo-000: not in .*prompts.jsonl"):
        score_hps_shard(settings(cfg, "eval_score", bench="hpsv2").eval.hpsv2, tmp_path / "s.tar", tmp_path / "prompts.jsonl",
                        tmp_path / "out.jsonl", device="cpu", progress=False)
    assert not (tmp_path / "out.jsonl").exists()
