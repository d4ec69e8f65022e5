"""The reward-model metrics (agfsync.core.rewards): PickScore against its model card's
computation, the per-image stage on tiny models for every reward, the result files (HPS v2.1
with the HPS protocol, prompts an endpoint skipped), the DAG and the config checks.
Name filters: `pytest -k pickscore`, `-k imagereward`, `-k vqascore`, `-k hpsv21`."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import on_tiny_models, settings
from PIL import Image

from agfsync.core import dag, layout
from agfsync.core.benchmarks import metrics_for
from agfsync.core.config import ConfigError, check_config, llm_sections, load_config
from agfsync.core.downloads import hub_repos
from agfsync.core.io import read_jsonl, write_jsonl
from agfsync.stages import evaluate, rewards
from agfsync.stages import metrics as results

RECORDS = [{"id": f"photo-{i:03d}", "prompt": p, "group": "photo"} for i, p in enumerate(
    ["a red bicycle against a wall", "a bowl of ramen", "fog over a forest"])]


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(3)]


@pytest.fixture
def cfg(demo_config, tiny_models):
    return on_tiny_models(demo_config, tiny_models)


# ----------------------------------------------------------------------------- PickScore


def test_pickscore_equals_the_model_cards_logits_per_image(tiny_models):
    from transformers import AutoProcessor, CLIPModel

    from agfsync.models.rewards import load_pickscore

    scorer = load_pickscore(str(tiny_models / "clip"), str(tiny_models / "clip"), device="cpu")
    images, prompt = _images(), "a red bicycle against a wall"
    got = scorer.score(images, prompt)
    model = CLIPModel.from_pretrained(tiny_models / "clip").eval()
    processor = AutoProcessor.from_pretrained(tiny_models / "clip")
    inputs = processor(text=[prompt], images=images, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        want = model(**inputs).logits_per_image[:, 0].numpy()  # logit_scale.exp() * cos: the model card's score
    assert got.dtype == np.float64 and got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the scale is CLIP's learned temperature (exp(2.6592) = 14.29 untrained), not CLIP score's 100
    assert float(model.logit_scale.exp()) == pytest.approx(14.2857, rel=1e-3)
    np.testing.assert_allclose(scorer.score(images[:1], prompt), got[:1], rtol=1e-6)


# ----------------------------------------------------------------------------- the per-image stage


@pytest.mark.parametrize("reward", ["pickscore", "imagereward", "hpsv21", "vqascore"])
def test_reward_stage_scores_every_image_of_a_shard(cfg, tmp_path, reward):
    from agfsync.models.rewards import load_reward_scorer

    bench = cfg["eval"][reward]["benchmark"]
    records = [{**r, "id": r["id"].replace("photo", "coco"), "group": "coco", "qa": []} for r in RECORDS] \
        if bench == "tifa" else RECORDS
    write_jsonl(tmp_path / "prompts.jsonl", records)
    evaluate.generate_eval_shard(settings(cfg, "eval_generate", model="sd15"), "sd15", bench, "base", records,
                                 tmp_path / "shard.tar", progress=False)
    s = settings(cfg, "eval_reward", reward=reward)
    out = tmp_path / f"{reward}-00000.jsonl"
    n = rewards.run(s, {"shard": str(tmp_path / "shard.tar"), "prompts": str(tmp_path / "prompts.jsonl")},
                    {"scores": str(out)}, reward=reward, bench=bench, progress=False, model="sd15", variant="base",
                    shard="00000")
    rows = read_jsonl(out)
    assert n == 3 and [r["prompt_id"] for r in rows] == [r["id"] for r in records]
    assert all(set(r) == {"prompt_id", "group", "seed", "reward"} and isinstance(r["reward"], float) for r in rows)
    scorer = load_reward_scorer(reward, getattr(s.eval, reward), "cpu")
    with evaluate.open_shard(tmp_path / "shard.tar", tmp_path / "prompts.jsonl") as (shard, items):
        want = [float(scorer.score([shard.image(row)], record["prompt"])[0]) for record, row in items]
    np.testing.assert_allclose([r["reward"] for r in rows], want, rtol=1e-6, atol=1e-7)
    if reward == "vqascore":
        assert all(0.0 <= r["reward"] <= 1.0 for r in rows)


def test_pickscore_stage_refuses_another_benchmarks_images(cfg, tmp_path):
    s = settings(cfg, "eval_reward", reward="pickscore")
    with pytest.raises(ValueError, match=r"^pickscore scores the images of hpsv2 \(eval.pickscore.benchmark\), not of "
                                         r"tifa$"):
        rewards.run(s, {"shard": "x.tar", "prompts": "p.jsonl"}, {"scores": str(tmp_path / "o.jsonl")},
                    reward="pickscore", bench="tifa")
    with pytest.raises(ValueError, match=r"pickscore scores the images of hpsv2 \(eval.pickscore.benchmark\), not of "
                                         r"mjhq"):
        dag.check_reward_bench(cfg, "pickscore", "mjhq")


# ----------------------------------------------------------------------------- result files


def _cfg_for_results(demo_config):
    cfg = copy.deepcopy(demo_config)
    cfg["eval"]["tifa"]["answering"] = "choices"
    return settings(cfg)


def test_hpsv21_result_follows_the_hps_protocol_and_records_v21(demo_config):
    def rows(offset, field):
        return [{"prompt_id": f"anime-{i:03d}", "group": "anime", field: float(i + offset)} for i in range(160)]

    s = _cfg_for_results(demo_config)
    got = results.reward_result("hpsv21", "sd15", s, "0" * 16, {"base": rows(0, "reward"), "agfsync": rows(1, "reward")})
    ref = results.hps_result("sd15", s, "0" * 16, {"base": rows(0, "hps"), "agfsync": rows(1, "hps")})
    results.validate(got)
    assert got["metric"] == "hpsv21" and got["benchmark"] == {"name": "HPS v2", "version": "v2.1"}
    assert got["variants"]["base"]["value"] == pytest.approx(79.5)  # two chunk means, 39.5 and 119.5
    assert got["variants"]["base"]["details"]["styles"] == ref["variants"]["base"]["details"]["styles"]
    assert got["difference"]["value"] == pytest.approx(1.0)
    assert (got["difference"]["ci_low"], got["difference"]["ci_high"]) == pytest.approx((1.0, 1.0))
    assert got["implementation"]["checkpoint"] == "HPS_tiny.pt" and got["implementation"]["chunk"] == 80
    assert got["count"] == {"prompts": 160, "images": 320, "skipped_prompts": 0}


def test_vqascore_result_leaves_out_prompts_the_endpoint_skipped_in_either_variant(demo_config):
    base = [{"prompt_id": "coco_1", "group": "coco", "reward": 0.2}, {"prompt_id": "coco_2", "group": "coco", "reward": None},
            {"prompt_id": "coco_3", "group": "coco", "reward": 0.6}, {"prompt_id": "drawbench_4", "group": "drawbench",
                                                                       "reward": 0.5}]
    tuned = [{"prompt_id": "coco_1", "group": "coco", "reward": 0.4}, {"prompt_id": "coco_2", "group": "coco", "reward": 0.9},
             {"prompt_id": "coco_3", "group": "coco", "reward": 0.7}, {"prompt_id": "drawbench_4", "group": "drawbench",
                                                                        "reward": None}]
    got = results.reward_result("vqascore", "sd15", _cfg_for_results(demo_config), "0" * 16,
                                {"base": base, "agfsync": tuned})
    results.validate(got)
    assert got["count"] == {"prompts": 2, "images": 4, "skipped_prompts": 2}
    assert got["variants"]["base"]["value"] == pytest.approx(0.4)
    assert got["variants"]["agfsync"]["value"] == pytest.approx(0.55)
    assert got["difference"]["value"] == pytest.approx(0.15) and got["difference"]["n"] == 2
    assert got["benchmark"]["name"] == "TIFA" and got["implementation"]["question"].startswith("Does this figure show")


def test_pickscore_rows_make_a_metric_file_and_metrics_tsv_rows(demo_config, tmp_path):
    from agfsync.report.table import result_rows

    s = _cfg_for_results(demo_config)
    for variant, offset in (("base", 0.0), ("agfsync", 0.5)):
        write_jsonl(tmp_path / f"{variant}.jsonl", [{"prompt_id": f"photo-{i:03d}", "group": "photo", "seed": i,
                                                     "reward": 20.0 + i + offset} for i in range(4)])
    result = results.write_metric(s, "sd15", "pickscore", {v: [str(tmp_path / f"{v}.jsonl")] for v in ("base", "agfsync")},
                                  tmp_path / "pickscore.json", "0" * 16)
    assert result["variants"]["base"]["value"] == pytest.approx(21.5)
    assert result["difference"]["value"] == pytest.approx(0.5)
    assert result["implementation"]["reward"] == "PickScore"
    assert result["implementation"]["model"] == "resources/tiny_models/clip"
    rows = result_rows(result)
    assert rows[0]["benchmark"] == "hpsv2" and rows[0]["metric"] == "pickscore"


# ----------------------------------------------------------------------------- DAG and config


def test_reward_metrics_in_the_dag_read_their_own_per_image_files(demo_config):
    cfg = check_config(copy.deepcopy(demo_config))
    assert [m for m in metrics_for(cfg) if m in ("pickscore", "imagereward", "hpsv21", "vqascore")] == [
        "pickscore", "imagereward", "hpsv21", "vqascore"]
    inputs = dag.metric_inputs(cfg, "sd15", "pickscore")
    assert inputs["base"] == ["results/sd15/eval/base/hpsv2/pickscore-00000.jsonl",
                              "results/sd15/eval/base/hpsv2/pickscore-00001.jsonl"]
    assert dag.metric_inputs(cfg, "sdxl", "vqascore")["agfsync"] == ["results/sdxl/eval/agfsync/tifa/vqascore-00000.jsonl"]
    assert layout.METRIC.format(model="sd15", metric="imagereward") in dag.final_targets(cfg)
    cfg["eval"]["pickscore"]["enabled"] = False
    assert "pickscore" not in metrics_for(cfg) and "imagereward" in metrics_for(cfg)


def test_reward_models_are_hub_downloads_of_the_paper_config(repo):
    cfg = load_config(repo / "config" / "config.yaml")
    repos = hub_repos(cfg)
    for hub_id in ("yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "google-bert/bert-base-uncased",
                   "Salesforce/blip2-flan-t5-xxl"):
        assert hub_id in repos
    files = {entry["path"] for entry in cfg["downloads"]["files"]}
    assert {"resources/weights/HPS_v2.1_compressed.pt", "resources/weights/ImageReward/ImageReward.pt",
            "resources/weights/ImageReward/med_config.json"} <= files
    assert dag.stage_params(cfg, "eval_reward", reward="pickscore")["eval"] == {"pickscore": cfg["eval"]["pickscore"]}


@pytest.mark.parametrize("change, message", [
    ({"pickscore": {"benchmark": "mjhq"}, "mjhq": {"enabled": False}},
     "key 'eval.pickscore.benchmark': PickScore scores the images of 'mjhq', which is not enabled (eval.mjhq.enabled)"),
    ({"hpsv21": {"checkpoint": "resources/weights/HPS_v2_compressed.pt"}},
     "key 'eval.hpsv21.checkpoint': HPS_v2_compressed.pt is HPS v2.0 (eval.hpsv2 scores it); HPS v2.1 is "
     "HPS_v2.1_compressed.pt"),
    ({"vqascore": {"backend": "endpoint"}},
     "key 'eval.vqascore.llm': backend 'endpoint' needs an llm section"),
    ({"vqascore": {"question": "Is this a good image?"}},
     "key 'eval.vqascore.question': must contain {prompt}, got 'Is this a good image?'"),
])
def test_reward_config_errors_name_the_key(demo_config, change, message):
    cfg = copy.deepcopy(demo_config)
    for section, values in change.items():
        cfg["eval"][section].update(values)
        if values.get("backend") == "endpoint":
            del cfg["eval"][section]["llm"]
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert message in str(err.value)


def test_vqascore_endpoint_backend_runs_without_a_gpu_rule_and_downloads_no_vlm(demo_config):
    cfg = copy.deepcopy(demo_config)
    cfg["eval"]["vqascore"].update(backend="endpoint", llm={"provider": "openai", "model": "llava",
                                                            "base_url": "http://127.0.0.1:8000/v1", "api_key_env": None})
    cfg = check_config(cfg)
    from agfsync.core.rewards import reward_values, uses_endpoint

    assert uses_endpoint(cfg, "vqascore") and reward_values(cfg, "vqascore") == []
    assert "eval.vqascore.llm" in [dotted for dotted, _ in llm_sections(cfg)]  # its key is masked, its fetch settings operational
