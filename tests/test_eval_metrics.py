"""Stage 6 pieces against independent references: FID, result files, the VLM judge and
the benchmark loaders."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import scipy.linalg
import torch
from fake_openai import FakeOpenAI, error, ok
from helpers import settings
from PIL import Image

from agfsync.core import benchmarks

from agfsync.models import fid

from agfsync.stages import judge

from agfsync.stages import metrics as results
from agfsync.core.io import DataError
from agfsync.core.sections import MJHQSettings
from agfsync.llm.answers import BadOutput
from agfsync.llm.base import Reply

# ----------------------------------------------------------------------------- FID


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's formula, written out independently: scipy sqrtm of the covariance product."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert fid.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = [fid.frechet_distance(a, a + shift) for shift in (0.1, 0.5, 1.0)]
    assert shifted == pytest.approx([8 * 0.01, 8 * 0.25, 8 * 1.0], rel=1e-6)  # |mu1 - mu2|^2, covariances equal
    b = rng.normal(size=(300, 8)) * 1.5 + 0.2
    assert fid.frechet_distance(a, b) == pytest.approx(reference_fid(a, b), rel=1e-6)


def test_fid_equals_torchmetrics_frechet_inception_distance_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Flatten(torch.nn.Module):  # "features" = the images' pixels, flattened
        num_features = 12

        def forward(self, x):
            return x.reshape(x.shape[0], -1).double()

    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (64, 3, 2, 2), dtype=np.uint8)
    fake = np.clip(real.astype(int) + rng.integers(-40, 80, real.shape), 0, 255).astype(np.uint8)
    metric = FrechetInceptionDistance(feature=Flatten(), normalize=False)
    metric.set_dtype(torch.float64)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    expected = float(metric.compute())
    ours = fid.frechet_distance(fake.reshape(64, -1).astype(np.float64), real.reshape(64, -1).astype(np.float64))
    assert ours == pytest.approx(expected, rel=1e-5)


def test_fid_needs_two_images_per_set():
    with pytest.raises(ValueError, match="FID needs at least 2 images per set, got 1"):
        fid.frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))


def test_feature_extraction_batches_by_size_and_matches_single_calls(tiny_models):
    net, info = fid.load_extractor(MJHQSettings(features=str(tiny_models / "fid")), "cpu")
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in
              [(40, 40, 3)] * 3 + [(64, 48, 3)] * 2]
    batched = fid.extract(images, net, "cpu", batch_size=2)
    single = np.concatenate([fid.extract([image], net, "cpu") for image in images])
    assert batched.shape == (5, 16) and info["features"] == "tiny random conv net (16)"
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)


def test_inception_weights_missing_names_the_key(tmp_path):
    section = MJHQSettings(features="inception", inception_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match=r"eval.mjhq.inception_weights: .*nope.pth not found"):
        fid.load_extractor(section, "cpu")


class Pickled:
    """Any class instance: torch.load(weights_only=True) refuses to rebuild it."""


def test_inception_weights_with_pickled_code_are_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2), "evil": Pickled()}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        fid.load_extractor(MJHQSettings(features="inception", inception_weights=str(path)), "cpu")


# ----------------------------------------------------------------------------- result files


def cfg_for_results(demo_config):
    cfg = copy.deepcopy(demo_config)
    cfg["eval"]["tifa"]["enabled"] = cfg["eval"]["hpsv2"]["enabled"] = cfg["eval"]["mjhq"]["enabled"] = True
    return settings(cfg)


def test_tifa_result_golden(demo_config):
    rows = {
        "base": [{"prompt_id": "coco_1", "group": "coco", "correct": [True, False], "element_types": ["object", "color"]},
                 {"prompt_id": "drawbench_2", "group": "drawbench", "correct": [False], "element_types": ["color"]}],
        "agfsync": [{"prompt_id": "coco_1", "group": "coco", "correct": [True, True], "element_types": ["object", "color"]},
                    {"prompt_id": "drawbench_2", "group": "drawbench", "correct": [False], "element_types": ["color"]}],
    }
    result = results.tifa_result("sd15", cfg_for_results(demo_config), "0123456789abcdef", rows)
    results.validate(result)
    assert result["variants"]["base"]["value"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert result["variants"]["agfsync"]["value"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert result["difference"]["value"] == pytest.approx(0.25)
    assert result["difference"]["by_group"] == {"color": pytest.approx(0.5), "object": 0.0}  # 0/2 -> 1/2
    assert result["variants"]["base"]["details"]["by_source"]["coco"] == {"score": 0.5, "num_prompts": 1}
    assert result["count"] == {"prompts": 2, "images": 4}
    assert result["benchmark"] == {"name": "TIFA", "version": "v1.0"}


def test_hps_result_uses_benchmark_order_for_chunks(demo_config):
    def rows(offset):  # 160 anime images; ids out of order on purpose, and "anime-100" after "anime-099"
        items = [{"prompt_id": f"anime-{i:03d}", "group": "anime", "hps": float(i + offset)} for i in range(160)]
        return list(reversed(items))

    result = results.hps_result("sd15", cfg_for_results(demo_config), "0123456789abcdef",
                                {"base": rows(0), "agfsync": rows(1)})
    results.validate(result)
    assert result["variants"]["base"]["details"]["styles"]["anime"]["mean"] == pytest.approx(79.5)
    assert result["variants"]["base"]["details"]["styles"]["anime"]["std"] == pytest.approx(40.0)
    assert result["difference"]["value"] == pytest.approx(1.0)
    assert result["variants"]["agfsync"]["details"]["better_than_base_fraction"] == 1.0


def test_result_of_mismatched_prompts_is_refused(demo_config):
    rows = {"base": [{"prompt_id": "a", "group": "g", "clip": 1.0}], "agfsync": [{"prompt_id": "b", "group": "g", "clip": 2.0}]}
    with pytest.raises(DataError, match=r"clipscore \(sd15\): base and agfsync images cover different prompts \(e.g. a, b\)"):
        results.mean_result("clipscore", "clip", "sd15", cfg_for_results(demo_config), "0" * 16, rows, {})


def test_fid_result_per_category_and_overall(demo_config):
    rng = np.random.default_rng(3)
    ids = [f"{c}{i}" for c in "ab" for i in range(50)]
    groups = ["animals"] * 50 + ["food"] * 50
    ref = rng.normal(size=(100, 4))
    reference = {"ids": ids, "groups": groups, "features": ref, "info": {"features": "test"}}
    base = {"ids": ids, "groups": groups, "features": ref + 1.0}
    tuned = {"ids": ids, "groups": groups, "features": ref.copy()}
    result = results.fid_result("sd15", cfg_for_results(demo_config), "0" * 16, {"base": base, "agfsync": tuned}, reference)
    results.validate(result)
    assert result["variants"]["agfsync"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert result["variants"]["base"]["value"] == pytest.approx(4.0, rel=1e-6)  # shift of 1 in 4 dimensions
    assert result["variants"]["base"]["details"]["by_category"]["food"]["fid"] == pytest.approx(4.0, rel=1e-6)
    assert result["higher_is_better"] is False and result["difference"]["value"] == pytest.approx(-4.0, rel=1e-6)
    assert result["implementation"]["torchmetrics"] and result["implementation"]["features"] == "test"


def test_result_schema_rejects_a_broken_file(demo_config):
    rows = {v: [{"prompt_id": "a", "group": "g", "clip": 1.0}] for v in ("base", "agfsync")}
    result = results.mean_result("clipscore", "clip", "sd15", cfg_for_results(demo_config), "0" * 16, rows, {})
    results.validate(result)
    del result["variants"]["agfsync"]
    result["config_hash"] = "xyz"
    with pytest.raises(DataError, match=r"out.json: not a valid result file: config_hash: 'xyz' does not match .*"
                                        r"variants: 'agfsync' is a required property"):
        results.validate(result, "out.json")


# ----------------------------------------------------------------------------- VLM judge


def test_wilson_interval_golden():
    low, high = judge.wilson(8, 10, 0.95)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # standard Wilson table value
    assert judge.wilson(0, 0, 0.95) == (0.0, 1.0)


@pytest.mark.parametrize(("text", "verdict"), [
    ('{"winner": "A"}', "A"), ('{"winner": "image b", "reason": "x"}', "B"), ('```json\n{"winner": "Tie"}\n```', "tie"),
])
def test_parse_verdict(text, verdict):
    assert judge.parse_verdict(Reply(text=text)) == verdict


@pytest.mark.parametrize(("text", "message"), [
    ('{"better": "A"}', "missing field 'winner' (got fields: better)"),
    ('{"winner": "C"}', "'winner' must be \"A\", \"B\" or \"tie\", got 'C'"),
    ('{"winner": 1}', "'winner' must be \"A\", \"B\" or \"tie\", got 1"),
])
def test_parse_verdict_errors(text, message):
    with pytest.raises(BadOutput) as err:
        judge.parse_verdict(Reply(text=text))
    assert str(err.value) == message


def test_outcome_maps_positions_back_to_agfsync():
    assert judge.outcome_for_agfsync("A", agfsync_is_a=True) == "win"
    assert judge.outcome_for_agfsync("A", agfsync_is_a=False) == "loss"
    assert judge.outcome_for_agfsync("B", agfsync_is_a=False) == "win"
    assert judge.outcome_for_agfsync("tie", agfsync_is_a=True) == "tie"
    firsts = [judge.agfsync_first(200, "sd15", f"p{i}") for i in range(200)]
    assert 70 < sum(firsts) < 130  # the order is randomised per pair, not fixed


def test_judge_against_a_local_server(demo_config, tmp_path, api_key):
    """The judge always prefers the brighter image: AGFSync's are bright, so every valid
    answer is a win whatever side it was shown on. One answer is invalid twice (skipped),
    one is a 429 first (retried)."""
    from conftest import live_llm

    def brightness(url: str) -> float:
        import base64
        import io

        return float(np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))).mean())

    def responder(body, seen):
        content = body["messages"][1]["content"]
        prompt = content[0]["text"]
        if "p3" in prompt:
            return ok('{"winner": "C"}')
        if "p5" in prompt and seen == 0:
            return error(429, "slow down")
        a, b = (brightness(part["image_url"]["url"]) for part in content[1:])
        return ok(json.dumps({"winner": "A" if a > b else "B", "reason": "brighter"}))

    records = [{"id": f"p{i}", "prompt": f"prompt p{i}"} for i in range(8)]
    images = {r["id"]: (Image.new("RGB", (8, 8), (20, 20, 20)), Image.new("RGB", (8, 8), (230, 230, 230)))
              for r in records}
    with FakeOpenAI(responder) as server:
        cfg = copy.deepcopy(demo_config)
        cfg["llm_cache_dir"] = str(tmp_path / "cache")
        cfg["eval"]["judge"]["llm"] = live_llm(server.base_url, repair_attempts=1)
        outcomes, skipped, stats = judge.judge_pairs(settings(cfg, "eval_judge", model="sd15"), "sd15", records, images)
        sent = len(server.requests)
        again = judge.judge_pairs(settings(cfg, "eval_judge", model="sd15"), "sd15", records, images)
        assert len(server.requests) == sent  # the rerun is answered from the cache
    assert outcomes == {f"p{i}": "win" for i in range(8) if i != 3}
    assert list(skipped) == ["p3"] and "'winner' must be" in skipped["p3"][0]
    assert again[0] == outcomes
    assert stats["retries"] == 1
    summary = judge.summarise(outcomes, 0.95)
    assert summary["counts"] == {"win": 7, "tie": 0, "loss": 0} and summary["win"]["rate"] == 1.0


# ----------------------------------------------------------------------------- benchmark files


def test_demo_benchmarks_load_in_order(demo_config):
    tifa_records = benchmarks.load_benchmark(demo_config, "tifa")
    assert [r["id"] for r in tifa_records][:3] == ["coco_100001", "coco_100002", "partiprompt_7"]
    assert tifa_records[0]["group"] == "coco" and len(tifa_records[0]["qa"]) == 5
    hps_records = benchmarks.load_benchmark(demo_config, "hpsv2")
    assert [r["id"] for r in hps_records][::3] == ["anime-000", "concept-art-000", "paintings-000", "photo-000"]
    mjhq = benchmarks.load_benchmark(demo_config, "mjhq")
    assert [r["group"] for r in mjhq] == ["animals"] * 3 + ["food"] * 3 + ["landscape"] * 3


def test_shard_counts_come_from_the_config_not_the_files(demo_config):
    cfg = copy.deepcopy(demo_config)
    for section in ("tifa", "hpsv2", "mjhq"):
        cfg["eval"][section].update({"max_prompts": None} if section == "tifa" else {})
    cfg["eval"]["hpsv2"]["per_style"] = None
    cfg["eval"]["mjhq"]["per_category"] = None
    cfg["eval"]["mjhq"]["categories"] = None
    cfg["eval"]["shard_size"] = 256
    assert [benchmarks.num_eval_shards(cfg, b) for b in benchmarks.BENCHMARKS] == [16, 13, 118]  # 4081, 3200, 30000


def test_bad_benchmark_files_name_file_and_record(demo_config, tmp_path):
    cfg = copy.deepcopy(demo_config)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps([{"id": "coco_100001", "caption": "x"}, {"id": "../etc", "caption": "y"}]))
    cfg["eval"]["tifa"]["text_inputs"] = str(inputs)
    with pytest.raises(DataError, match=r"inputs.json, record 1: id '../etc' is not a safe identifier"):
        benchmarks.load_benchmark(cfg, "tifa")
    inputs.write_text(json.dumps([{"id": "coco_999", "caption": "x"}]))
    with pytest.raises(DataError, match=r"inputs.json, record 0 \(id coco_999\): no questions in .*question_answers.json"):
        benchmarks.load_benchmark(cfg, "tifa")
    (tmp_path / "anime.json").write_text(json.dumps(["only one"]))
    for style in ("concept-art", "paintings", "photo"):
        (tmp_path / f"{style}.json").write_text(json.dumps(["a", "b", "c"]))
    cfg["eval"]["hpsv2"]["prompts_dir"] = str(tmp_path)
    with pytest.raises(DataError, match=r"anime.json: has 1 prompts, eval.hpsv2.per_style asks for 3"):
        benchmarks.load_benchmark(cfg, "hpsv2")


def test_judge_prompts_cover_the_groups_evenly():
    records = [{"id": f"{g}-{i}", "group": g} for g in ("anime", "photo") for i in range(3)]
    assert [r["id"] for r in results.interleave_groups(records)][:4] == ["anime-0", "photo-0", "anime-1", "photo-1"]
