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


def test_fid_resize_conventions_are_applied_and_recorded(tiny_models, monkeypatch, tmp_path):
    """eval.mjhq.resize: torchmetrics (antialiased bilinear), torch-fidelity (TF 1.x bilinear) or
    clean-fid (PIL float bicubic), named in the extractor's description, which the FID result records."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    features, infos = {}, {}
    for how in ("torchmetrics", "torch-fidelity", "clean-fid"):
        net, infos[how] = fid.load_extractor(MJHQSettings(features=str(tiny_models / "fid"), resize=how), "cpu")
        features[how] = fid.extract(images, net, "cpu")
    assert infos["torchmetrics"]["resize"].startswith("torchmetrics: bilinear, antialiased")
    assert infos["torch-fidelity"]["resize"].startswith("torch-fidelity: bilinear as TensorFlow 1.x")
    assert infos["clean-fid"]["resize"].startswith("clean-fid: PIL bicubic per channel in float")
    for a, b in (("torchmetrics", "torch-fidelity"), ("torchmetrics", "clean-fid"), ("torch-fidelity", "clean-fid")):
        assert not np.allclose(features[a], features[b])  # 64 -> 32 px: the three differ
    x = torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2)
    tf1 = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(32, 32), align_corners=False)
    torch.testing.assert_close(fid.resize(x, 32, "torch-fidelity"), tf1)
    antialiased = torch.nn.functional.interpolate(x.float(), size=(32, 32), mode="bilinear", antialias=True)
    torch.testing.assert_close(fid.resize(x, 32, "torchmetrics"), antialiased)
    # the Inception network gets the same choice (torchmetrics' antialias flag)
    seen = {}

    class FakeInception(torch.nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            seen.update(kwargs)

    monkeypatch.setattr("torchmetrics.image.fid.NoTrainInceptionV3", FakeInception)
    weights = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    for how, antialias in (("torchmetrics", True), ("torch-fidelity", False)):
        _, info = fid.load_extractor(MJHQSettings(inception_weights=str(weights), resize=how), "cpu")
        assert seen["antialias"] is antialias and info["resize"].startswith(how + ":")
    with pytest.raises(ValueError, match="key 'resize': 'bicubic' is not one of torchmetrics, torch-fidelity, clean-fid"):
        MJHQSettings(resize="bicubic")
    with pytest.raises(ValueError, match=r"unknown FID resize 'bicubic' \(expected one of torchmetrics, torch-fidelity, "
                                         r"clean-fid\)"):
        fid.resize(x, 32, "bicubic")


def pil_float_bicubic(array_HWC: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's "clean" resize written with PIL itself: each channel a float32 ("F") image,
    BICUBIC to size x size, clipped to 0..255; (3, size, size)."""
    channels = [np.asarray(Image.fromarray(array_HWC[..., c].astype(np.float32)).resize((size, size), Image.BICUBIC))
                for c in range(3)]
    return np.clip(np.stack(channels), 0, 255)


@pytest.mark.parametrize("height, width, size", [(37, 53, 299), (300, 517, 299), (64, 64, 32)])
def test_clean_fid_resize_equals_pil_float_bicubic(height, width, size):
    """Up- and downscaling, odd sizes, non-square: our torch bicubic is PIL's to float32 rounding,
    unquantised (not integers), and far from the two bilinear conventions."""
    rng = np.random.default_rng(height)
    arrays = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2)
    ours = fid.resize(x, size, "clean-fid")
    assert ours.shape == (2, 3, size, size) and ours.dtype == torch.float32
    expected = np.stack([pil_float_bicubic(a, size) for a in arrays])
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-4)
    assert ours.min() >= 0 and ours.max() <= 255 and not torch.equal(ours, ours.round())
    for other in ("torchmetrics", "torch-fidelity"):
        assert (fid.resize(x, size, other) - ours).abs().mean() > 1.0  # grey levels, of 255


def test_clean_fid_feeds_the_inception_layers_our_float_resize(monkeypatch, tmp_path):
    """The real network (random weights): at 299 x 299 uint8, where NoTrainInceptionV3's own
    resizes are the identity, _FloatInception equals its forward (same layers, same
    normalisation); at 37 x 53 the first layer sees (PIL float bicubic - 128) / 128."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    monkeypatch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, strict=True: None)
    weights = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    torch.manual_seed(0)
    net, info = fid.load_extractor(MJHQSettings(inception_weights=str(weights), resize="clean-fid"), "cpu")
    assert isinstance(net, fid._FloatInception) and "on float input" in info["features"]
    rng = np.random.default_rng(5)
    x299 = torch.from_numpy(rng.integers(0, 256, (1, 3, 299, 299), dtype=np.uint8))
    with torch.no_grad():
        ours = net(x299)
        for antialias in (True, False):
            net.inception.use_antialias = antialias
            torch.testing.assert_close(ours, net.inception(x299), rtol=1e-4, atol=1e-5)
        assert ours.shape == (1, 2048) and ours.std() > 0
        seen = []
        net.inception.Conv2d_1a_3x3.register_forward_hook(lambda module, args, out: seen.append(args[0]))
        small = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
        net(torch.from_numpy(small).permute(2, 0, 1)[None])
    expected = (pil_float_bicubic(small, 299) - 128) / 128
    np.testing.assert_allclose(seen[0][0].numpy(), expected, rtol=0, atol=1e-4 / 128)


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
    # synthetic rows carry our answers only; the official answering's result: tests/test_tifa_answering.py
    cfg["eval"]["tifa"]["answering"] = "choices"
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
    assert result["implementation"]["choice_likelihood"] == "sum"  # scores.vqa.choice_likelihood, recorded
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
    assert result["implementation"]["name"].startswith("Fréchet distance") and result["implementation"]["features"] == "test"


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


# ----------------------------------------------------------------------------- CIs, proxy, gold, metrics.tsv


def _ci(interval) -> dict:
    return {k: v for k, v in interval.as_dict().items() if k != "value"}


def gold_rows():
    """Three world prompts; per question: the element type and the oracle's verdict per variant."""
    def row(pid, split, types, correct, key="gold_correct"):
        return {"prompt_id": pid, "group": pid.split("_")[0], "split": split, "element_types": types,
                key: correct, "correct": [False] * len(types)}

    base = [row("colors_00001", "unseen", ["object", "color", "color"], [True, False, False]),
            row("counting_00002", "seen", ["object", "counting"], [True, False]),
            row("spatial_00003", "seen", ["object", "spatial", "color"], [False, False, True])]
    tuned = [row("colors_00001", "unseen", ["object", "color", "color"], [True, True, False]),
             row("counting_00002", "seen", ["object", "counting"], [True, True]),
             row("spatial_00003", "seen", ["object", "spatial", "color"], [True, False, True])]
    return {"base": base, "agfsync": tuned}


def test_gold_result_golden_with_paired_intervals(demo_config):
    from agfsync.core import stats
    from agfsync.core.seeds import derive_seed

    cfg = copy.deepcopy(demo_config)
    cfg["eval"]["tifa"]["gold"] = "world"
    s = settings(cfg, "eval_metric", model="sd15")
    result = results.gold_result("sd15", s, "0123456789abcdef", gold_rows())
    results.validate(result)
    assert result["metric"] == "gold" and "gold_accuracy" in result["implementation"]["value"]
    base, tuned = result["variants"]["base"], result["variants"]["agfsync"]
    assert base["value"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)  # mean over prompts of per-image accuracy
    assert tuned["value"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    # per element type over questions (TIFA's definition): color 1/3 -> 2/3, object 2/3 -> 3/3
    assert base["details"]["by_element_type"]["color"] == {"accuracy": pytest.approx(1 / 3), "num_questions": 3}
    assert result["difference"]["by_group"]["object"] == pytest.approx(1 / 3)
    assert base["details"]["by_split"] == {"seen": {"score": pytest.approx(5 / 12), "num_prompts": 2},
                                           "unseen": {"score": pytest.approx(1 / 3), "num_prompts": 1}}
    assert tuned["details"]["by_source"]["counting"] == {"score": 1.0, "num_prompts": 1}
    # the difference: stats.paired_delta over prompts (id order), seed from the config seed and "gold"
    diff = result["difference"]
    expected = stats.paired_delta([1 / 3, 1 / 2, 1 / 3], [2 / 3, 1, 2 / 3], resamples=10_000,
                                  seed=derive_seed(200, "bootstrap", "gold"))
    assert diff["value"] == pytest.approx(expected.value)
    assert {k: diff[k] for k in ("ci_low", "ci_high", "level", "resamples", "seed", "n")} == _ci(expected)
    assert (diff["n"], diff["resamples"], diff["level"]) == (3, 10_000, 0.95)
    assert base["ci"] == _ci(stats.mean_ci([1 / 3, 1 / 2, 1 / 3], seed=derive_seed(200, "bootstrap", "gold", "base")))
    # per element type: per prompt the accuracy over its questions of that type; prompts without it left out
    color = diff["by_element_type"]["color"]  # colors_00001: 0/2 -> 1/2; spatial_00003: 1/1 -> 1/1
    expected = stats.paired_delta([0.0, 1.0], [0.5, 1.0], resamples=10_000,
                                  seed=derive_seed(200, "bootstrap", "gold", "element_type", "color"))
    assert color == {**expected.as_dict(), "base": 0.5, "agfsync": 0.75}
    assert color["n"] == 2 and diff["by_element_type"]["counting"]["n"] == 1
    assert diff["by_split"]["seen"]["n"] == 2 and diff["by_split"]["seen"]["value"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert diff["by_source"]["colors"]["agfsync"] == pytest.approx(2 / 3)


def test_tifa_and_gold_read_their_own_answers(demo_config):
    rows = gold_rows()
    tifa = results.tifa_result("sd15", cfg_for_results(demo_config), "0" * 16, rows)
    assert tifa["variants"]["agfsync"]["value"] == 0.0 and tifa["difference"]["ci_low"] == 0.0  # `correct`: all wrong
    broken = copy.deepcopy(rows)
    broken["base"][1]["gold_correct"] = [True]
    with pytest.raises(DataError, match=r"gold \(sd15\), base image of counting_00002: 1 answers in 'gold_correct' "
                                        r"for 2 questions; rerun its eval_score shard"):
        results.gold_result("sd15", cfg_for_results(demo_config), "0" * 16, broken)


def test_proxy_is_the_stage3_weighted_total(demo_config):
    from agfsync.core import stats
    from agfsync.core.pairs import weighted_total
    from agfsync.core.seeds import derive_seed

    def rows(shift):
        return [{"prompt_id": f"coco_{i}", "group": "coco", "vqa": 20.0 * i, "clip": 30.0 + shift, "aesthetic": 50.0 + i}
                for i in range(4)]

    s = settings(demo_config, "eval_metric", model="sd15")
    result = results.proxy_result("sd15", s, "0" * 16, {"base": rows(0.0), "agfsync": rows(2.0)})
    results.validate(result)
    weights = {"vqa": 0.35, "clip": 0.55, "aesthetic": 0.10}
    totals = [weighted_total(r, weights) for r in rows(0.0)]
    assert result["variants"]["base"]["value"] == pytest.approx(np.mean(totals))
    assert result["difference"]["value"] == pytest.approx(0.55 * 2.0)
    expected = stats.paired_delta(totals, [weighted_total(r, weights) for r in rows(2.0)], resamples=10_000,
                                  seed=derive_seed(200, "bootstrap", "proxy"))
    assert result["difference"]["ci_low"] == expected.ci_low and result["difference"]["seed"] == expected.seed
    assert result["implementation"]["weights"] == weights


def test_hps_interval_is_the_protocol_average_paired_by_prompt(demo_config):
    def rows(offset):
        return [{"prompt_id": f"anime-{i:03d}", "group": "anime", "hps": float(i % 7) + offset} for i in range(100)] + [
            {"prompt_id": f"photo-{i:03d}", "group": "photo", "hps": float(i % 5) * offset} for i in range(20)]

    result = results.hps_result("sd15", cfg_for_results(demo_config), "0" * 16, {"base": rows(1.0), "agfsync": rows(2.0)})
    results.validate(result)
    # anime: chunks of 80 and 20, photo: one chunk of 20: unequal weights, and still the value is the protocol's
    assert result["difference"]["n"] == 120
    assert result["variants"]["base"]["ci"]["ci_low"] <= result["variants"]["base"]["value"]
    assert result["variants"]["base"]["ci"]["ci_high"] >= result["variants"]["base"]["value"]
    assert result["difference"]["ci_low"] <= result["difference"]["value"] <= result["difference"]["ci_high"]
    from agfsync.stages.metrics import _protocol_weighted

    order = {"anime": rows(1.0)[:100], "photo": rows(1.0)[100:]}
    assert np.mean(list(_protocol_weighted(order, 120).values())) == pytest.approx(result["variants"]["base"]["value"])


def test_gold_metric_from_files_with_the_declared_settings(demo_config, tmp_path):
    from agfsync.core.io import write_jsonl

    cfg = copy.deepcopy(demo_config)
    cfg["eval"]["tifa"]["gold"] = "world"
    assert benchmarks.metrics_for(cfg)[:5] == ["tifa", "clipscore", "aesthetic", "proxy", "gold"]
    assert "gold" not in benchmarks.metrics_for(demo_config)
    inputs = {}
    for variant, rows in gold_rows().items():
        write_jsonl(tmp_path / f"{variant}.jsonl", rows)
        inputs[variant] = [str(tmp_path / f"{variant}.jsonl")]
    s = settings(cfg, "eval_metric", model="sd15")
    result = results.write_metric(s, "sd15", "gold", inputs, tmp_path / "gold.json", "0" * 16)
    assert json.loads((tmp_path / "gold.json").read_text()) == result
    with pytest.raises(DataError, match=r"base.jsonl, line 1: .*vqa"):  # a scores file of an older version
        results.write_metric(s, "sd15", "proxy", inputs, tmp_path / "proxy.json", "0" * 16)


def test_fid_refuses_features_extracted_with_another_resize_than_the_reference(demo_config, tmp_path):
    from agfsync.stages.evaluate import save_features

    rng = np.random.default_rng(4)
    ids, groups = [f"a{i}" for i in range(20)], ["animals"] * 20
    info = {"features": "tiny random conv net (4)", "weights": "w", "resize": "torchmetrics: bilinear, antialiased"}
    save_features(tmp_path / "ref.npz", ids, groups, rng.normal(size=(20, 4)), info)
    save_features(tmp_path / "base.npz", ids, groups, rng.normal(size=(20, 4)), info)
    other = {**info, "resize": "torch-fidelity: bilinear as TensorFlow 1.x"}
    save_features(tmp_path / "tuned.npz", ids, groups, rng.normal(size=(20, 4)), other)
    s = settings(demo_config, "eval_metric", model="sd15")
    inputs = {"base": [str(tmp_path / "base.npz")], "agfsync": [str(tmp_path / "tuned.npz")],
              "reference": str(tmp_path / "ref.npz")}
    with pytest.raises(DataError, match=r"mjhq_fid \(sd15, agfsync\): .*tuned.npz was extracted with another resize "
                                        r"than the reference \('torch-fidelity: .*' vs 'torchmetrics: .*'\)"):
        results.write_metric(s, "sd15", "mjhq_fid", inputs, tmp_path / "fid.json", "0" * 16)
    save_features(tmp_path / "tuned.npz", ids, groups, rng.normal(size=(20, 4)), info)
    result = results.write_metric(s, "sd15", "mjhq_fid", inputs, tmp_path / "fid.json", "0" * 16)
    assert result["implementation"]["resize"] == info["resize"]


def test_metrics_tsv_long_format(demo_config, tmp_path):
    import pandas as pd

    from agfsync.report import table

    cfg = copy.deepcopy(demo_config)
    cfg["eval"]["tifa"]["gold"] = "world"
    s = settings(cfg, "eval_metric", model="sd15")
    gold = results.gold_result("sd15", s, "0" * 16, gold_rows())
    clip_rows = {v: [{"prompt_id": f"coco_{i}", "group": "coco", "clip": float(i + (v == "agfsync"))} for i in range(3)]
                 for v in ("base", "agfsync")}
    clip = results.mean_result("clipscore", "clip", "sd15", s, "0" * 16, clip_rows, {})
    (tmp_path / "gold.json").write_text(json.dumps(gold))
    (tmp_path / "clipscore.json").write_text(json.dumps(clip))
    paths = {"sd15": {"clipscore": tmp_path / "clipscore.json", "gold": tmp_path / "gold.json",
                      "judge": tmp_path / "missing.json"}}
    rows = table.write_tsv(tmp_path / "metrics.tsv", paths)
    text = (tmp_path / "metrics.tsv").read_text()
    assert text.splitlines()[0] == "model\tbenchmark\tmetric\tvariant\tvalue\tci_low\tci_high\tn"
    # clipscore: headline 3 + group 3 + better_than_base 1; gold: headline 3, element types (4 types) 12,
    # sources 9, splits 6, pooled element types 12; the missing judge file: none
    assert len(rows) == len(text.splitlines()) - 1 == 7 + 3 + 12 + 9 + 6 + 12
    frame = pd.read_csv(tmp_path / "metrics.tsv", sep="\t")
    assert list(frame.columns) == list(table.COLUMNS)
    assert frame.metric.iloc[0] == "clipscore"  # METRICS order
    delta = frame[(frame.metric == "gold") & (frame.variant == "delta")].iloc[0]
    assert delta.value == pytest.approx(gold["difference"]["value"])
    assert (delta.ci_low, delta.ci_high, delta.n) == (pytest.approx(gold["difference"]["ci_low"]),
                                                      pytest.approx(gold["difference"]["ci_high"]), 3)
    color = frame[(frame.metric == "gold/element_type=color")].set_index("variant")
    assert color.loc["base", "value"] == 0.5 and color.loc["agfsync", "value"] == 0.75 and color.loc["delta", "n"] == 2
    assert np.isnan(color.loc["base", "ci_low"]) and not np.isnan(color.loc["delta", "ci_low"])
    pooled = frame[(frame.metric == "gold/element_type_pooled=color")].set_index("variant")
    assert pooled.loc["agfsync", "value"] == pytest.approx(2 / 3) and pooled.loc["base", "n"] == 3
    unseen = frame[(frame.metric == "gold/split=unseen") & (frame.variant == "agfsync")]
    assert unseen.value.tolist() == [pytest.approx(2 / 3)] and set(frame.benchmark) == {"tifa"}
    base = frame[(frame.metric == "clipscore") & (frame.variant == "base")].iloc[0]
    assert (base.value, base.n) == (1.0, 3) and base.ci_low == pytest.approx(clip["variants"]["base"]["ci"]["ci_low"])


def test_judge_rows_carry_the_wilson_intervals():
    from agfsync.report import table

    judge = {"metric": "judge", "model": "sd15", "benchmark": {"name": "VLM judge on HPS v2", "version": "m"},
             "variants": {"base": {"value": 0.25, "details": {"ci": [0.1, 0.4]}},
                          "agfsync": {"value": 0.5, "details": {"ci": [0.3, 0.7]}}},
             "difference": {"value": 0.25}, "count": {"prompts": 20, "images": 40}}
    rows = table.result_rows(judge)
    assert [(r["benchmark"], r["variant"], r["value"], r["ci_low"], r["n"]) for r in rows] == [
        ("hpsv2", "base", 0.25, 0.1, 20), ("hpsv2", "agfsync", 0.5, 0.3, 20), ("hpsv2", "delta", 0.25, None, 20)]


@pytest.fixture
def tifa_shard(tmp_path):
    """Four world benchmark prompts: three rendered images and a blank one, as an evaluation shard."""
    from agfsync.core.io import write_jsonl
    from agfsync.core.shards import encode_png, image_member, write_shard
    from agfsync.world import benchmark, scenes

    records, rows, members = [], [], []
    for i, item in enumerate(benchmark.prompts(1, 4, "benchmark")):
        pid = f"{item['category'].replace('_', '-')}_{i:05d}"
        records.append({"id": pid, "prompt": item["prompt"], "group": pid.split("_")[0], "qa": item["qa"],
                        "split": item["split"]})
        image = scenes.render(item["scene"]) if i < 3 else Image.new("RGB", (64, 64), (128, 128, 128))
        rows.append({"prompt_id": pid, "candidate": 0, "image": image_member(pid, 0), "seed": i, "latent": None})
        members.append((image_member(pid, 0), encode_png(np.asarray(image))))
    write_jsonl(tmp_path / "prompts.jsonl", records)
    write_shard(tmp_path / "shard.tar", rows, members)
    return tmp_path / "shard.tar", tmp_path / "prompts.jsonl", records


def scorer_config(demo_config, tiny_models, **tifa):
    cfg = copy.deepcopy(demo_config)
    root = str(tiny_models)
    cfg["scores"]["vqa"]["model"] = f"{root}/blip2"
    cfg["scores"]["clip"]["model"] = f"{root}/clip"
    cfg["scores"]["aesthetic"].update(backbone=f"{root}/aesthetic/backbone", head=f"{root}/aesthetic/head.pth")
    cfg["eval"]["tifa"]["sbert"] = f"{root}/sbert"
    cfg["eval"]["tifa"].update(tifa)
    return cfg


def test_tifa_scores_carry_the_stage3_vqa_score_and_the_gold_answers(demo_config, tiny_models, tifa_shard, tmp_path):
    from agfsync.core.io import read_jsonl
    from agfsync.core.shards import Shard
    from agfsync.models.vqa import load_vqa_scorer
    from agfsync.stages import evaluate
    from agfsync.world import oracle

    shard, prompts, records = tifa_shard
    asked = []

    def gold(image, question):
        asked.append(question["question"])
        return oracle.answer(image, question)

    for method in ("fast", "authors"):  # stage 3's VQA score, whatever its method; TIFA always scores the choices
        cfg = scorer_config(demo_config, tiny_models, gold="world")
        cfg["scores"]["vqa"]["method"] = method
        s = settings(cfg, "eval_score", bench="tifa")
        out = tmp_path / f"scores-{method}.jsonl"
        asked.clear()
        evaluate.run_score(s, {"shard": str(shard), "prompts": str(prompts)}, {"scores": str(out)}, bench="tifa",
                           progress=False, gold=gold)
        rows = read_jsonl(out)
        assert asked == [q["question"] for r in records for q in r["qa"]]  # every question, in order
        stage3 = load_vqa_scorer(s.scores.vqa, device="cpu")
        with Shard(shard) as opened:
            for row, record, item in zip(rows, records, opened.rows):
                image = opened.image(item)
                assert row["gold_correct"] == [oracle.accuracy(image, [q]) == 1.0 for q in record["qa"]]
                assert row["gold"] == pytest.approx(oracle.accuracy(image, record["qa"]))
                if method == "fast" or row is rows[0]:  # the authors' method generates text: slow, one is enough
                    assert row["vqa"] == pytest.approx(float(stage3.score([image], record["qa"])[0][0]))
                assert row["split"] == record["split"] and len(row["correct"]) == len(record["qa"])
    assert [r["gold"] for r in rows][:3] == [1.0, 1.0, 1.0] and rows[3]["gold"] < 1.0  # renders are read exactly

    # without eval.tifa.gold no gold answer is asked for; with it, the answerer must be given
    plain = settings(scorer_config(demo_config, tiny_models), "eval_score", bench="tifa")
    asked.clear()
    evaluate.run_score(plain, {"shard": str(shard), "prompts": str(prompts)}, {"scores": str(tmp_path / "p.jsonl")},
                       bench="tifa", progress=False, gold=gold)
    assert asked == [] and "gold_correct" not in read_jsonl(tmp_path / "p.jsonl")[0]
    with pytest.raises(ValueError, match="eval.tifa.gold is 'world', but no gold answerer was given"):
        evaluate.run_score(s, {"shard": str(shard), "prompts": str(prompts)}, {"scores": str(tmp_path / "x.jsonl")},
                           bench="tifa", progress=False)


def test_a_question_the_gold_answerer_cannot_read_names_shard_record_and_key(demo_config, tiny_models, tifa_shard,
                                                                             tmp_path):
    from agfsync.core.io import write_jsonl
    from agfsync.stages import evaluate
    from agfsync.world import oracle

    shard, prompts, records = tifa_shard
    records[0]["qa"][0] = {**records[0]["qa"][0], "question": "Is the surfer riding a wave?"}
    write_jsonl(prompts, records)
    s = settings(scorer_config(demo_config, tiny_models, gold="world"), "eval_score", bench="tifa")
    with pytest.raises(DataError, match=rf"shard .*shard.tar, record {records[0]['id']}, question 0 \('Is the surfer "
                                        r"riding a wave\?'\): the gold answerer of eval.tifa.gold cannot answer it: "
                                        r"'Is the surfer riding a wave\?': question: .* \(eval.tifa.gold is only "
                                        r"meaningful on the world benchmark"):
        evaluate.run_score(s, {"shard": str(shard), "prompts": str(prompts)}, {"scores": str(tmp_path / "x.jsonl")},
                           bench="tifa", progress=False, gold=oracle.answer)


def test_the_report_writes_the_table_and_shows_the_intervals(demo_config, tmp_path):
    from agfsync.report import page

    cfg = copy.deepcopy(demo_config)
    cfg["eval"]["tifa"]["gold"] = "world"
    cfg["run_models"] = ["sd15"]
    s = settings(cfg, "eval_metric", model="sd15")
    (tmp_path / "gold.json").write_text(json.dumps(results.gold_result("sd15", s, "0" * 16, gold_rows())))
    missing = str(tmp_path / "missing")
    paths = {"sd15": {"metrics": {"gold": str(tmp_path / "gold.json"), "tifa": missing},
                      "train_metrics": missing, "train_summary": missing, "pairs": missing, "pairs_summary": missing,
                      "eval_shards": {}}}
    html = page.run(settings(cfg, "report"), {}, {"report": str(tmp_path / "r.html"), "tsv": str(tmp_path / "m.tsv")},
                    paths=paths, config_hash="0" * 16)
    assert "Gold accuracy (world oracle)" in html and 'id="gold-parts"' in html and "95% CI" in html
    assert (tmp_path / "m.tsv").read_text().count("\n") == 1 + 42


def test_judge_result_records_the_hub_commits_like_the_metric_files(demo_config, tmp_path, monkeypatch):
    """write_judge with `hub` (rule eval_judge's params): provenance.hub names every repository,
    its configured revision and the commit its download marker records."""
    from agfsync.core.shards import encode_png, image_member, write_shard

    records = [{"id": f"anime-{i:03d}", "prompt": f"prompt {i}", "group": "anime"} for i in range(3)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for variant in ("base", "agfsync"):
        rows = [{"prompt_id": r["id"], "candidate": 0, "image": image_member(r["id"], 0)} for r in records]
        write_shard(tmp_path / f"{variant}.tar", rows,
                    [(row["image"], encode_png(np.zeros((8, 8, 3), np.uint8))) for row in rows])
    monkeypatch.setattr(judge, "judge_pairs", lambda s, m, recs, imgs: ({r["id"]: "win" for r in recs}, {}, {}))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resources" / "hub").mkdir(parents=True)
    (tmp_path / "resources" / "hub" / "org--judge-model.json").write_text(json.dumps({"commit": "a" * 40,
                                                                                      "revision": None}))
    result = judge.write_judge(settings(demo_config, "eval_judge", model="sd15"), "sd15", [str(tmp_path / "base.tar")],
                               [str(tmp_path / "agfsync.tar")], tmp_path / "prompts.jsonl", tmp_path / "judge.json",
                               "0" * 16, hub={"org/judge-model": None, "org/other": "b" * 40})
    assert result["provenance"]["hub"] == {
        "org/judge-model": {"revision": None, "commit": "a" * 40, "marker_revision": None},
        "org/other": {"revision": "b" * 40, "commit": None, "marker_revision": None}}
    assert json.loads((tmp_path / "judge.json").read_text())["provenance"]["hub"] == result["provenance"]["hub"]
