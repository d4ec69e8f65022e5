"""Outputs shared whenever what determines them agrees (agfsync.core.sharing): a weights variant
reads another model's candidates and scores, a beta variant its pairs and training cache too,
every variant of one base model its base evaluation images; anything that could change an
output stops the sharing. Checked on the DAG helpers, on the plan, and on Snakemake's own
dry run of the demo with a three-variant sweep."""

from __future__ import annotations

import copy

import pytest
import yaml

from agfsync.core import dag, sharing
from agfsync.core.config import ConfigError, check_config, load_config
from agfsync.core.plan import plan, rule_jobs
from conftest import REPO

WEIGHTS = {"vqa": 0.35, "clip": 0.55, "aesthetic": 0.1}  # the paper's; the demo has its own


def sweep(base: dict, source: str, variants: dict) -> dict:
    """`base` plus models that copy `source`'s entry with `variants[name]` on top (no candidates_from)."""
    cfg = copy.deepcopy(base)
    for name, extra in variants.items():
        cfg["models"][name] = {**copy.deepcopy(cfg["models"][source]), **extra}
    cfg["run_models"] = [source, *variants]
    return check_config(cfg)


@pytest.fixture
def demo():
    return load_config(REPO / "config" / "demo.yaml")


def sources(cfg: dict, model: str) -> dict:
    return {stage: sharing.source(cfg, stage, model) for stage in sharing.CHAIN} | {
        "eval": sharing.source(cfg, "eval", model, "tifa"),
        "per_image": sharing.source(cfg, "per_image", model, "tifa", "per_image")}


def test_each_variant_shares_exactly_what_its_settings_leave_unchanged(demo):
    cfg = sweep(demo, "world", {
        "w": {"overrides": {"scores": {"weights": WEIGHTS}}},
        "beta": {"overrides": {"train": {"beta_dpo": 1000}}},
        "latents": {"overrides": {"train": {"latents": "vae"}}},
        "gamma": {"overrides": {"scores": {"clip": {"gamma": 50}}}},
        "sigma": {"overrides": {"candidates": {"sigma": 0.2}}},
        "cfg6": {"generation": {**demo["models"]["world"]["generation"], "guidance_scale": 6.0}},
    })
    every = ("candidates", "scores", "pairs", "train_cache", "eval", "per_image")
    world = {s: "world" for s in every}
    assert sources(cfg, "world") == world
    assert sources(cfg, "w") == {**world, "pairs": "w", "train_cache": "w"}
    assert sources(cfg, "beta") == world  # pairs and the training cache too: only training differs
    assert sources(cfg, "latents") == {**world, "train_cache": "latents"}
    # other CLIP scores: the same images, scored again (and the base images' TIFA scores too)
    assert sources(cfg, "gamma") == {**world, "scores": "gamma", "pairs": "gamma", "train_cache": "gamma",
                                     "per_image": "gamma"}
    # other candidates: the base model's evaluation images are still the same
    assert sources(cfg, "sigma") == {**{s: "sigma" for s in every}, "eval": "world", "per_image": "world"}
    assert sources(cfg, "cfg6") == {s: "cfg6" for s in every}
    assert sharing.shared(cfg)["beta"] == {s: "world" for s in sharing.CHAIN}
    assert "cfg6" not in sharing.shared(cfg)


def test_identity_ignores_the_models_name_and_wiring_but_not_its_settings(demo):
    cfg = sweep(demo, "world", {"copy": {}, "named": {"candidates_from": "world"}})
    for stage in sharing.CHAIN:
        assert sharing.identity(cfg, stage, "copy") == sharing.identity(cfg, stage, "world")
        assert sharing.identity(cfg, stage, "named") == sharing.identity(cfg, stage, "world")
    other = sweep(demo, "world", {"copy": {}})
    other["seed"] += 1
    assert sharing.identity(other, "candidates", "copy") != sharing.identity(cfg, "candidates", "copy")


def test_the_dag_reads_the_shared_files(demo):
    cfg = sweep(demo, "world", {"beta": {"overrides": {"train": {"beta_dpo": 1000}}}})
    paths = dag.report_paths(cfg)["beta"]
    assert paths["pairs"] == "results/world/pairs.jsonl"
    assert paths["candidate_shards"]["00000"] == "results/world/candidates/shard-00000.tar"
    assert paths["eval_shards"]["tifa"] == {"base": "results/world/eval/base/tifa/shard-00000.tar",
                                            "agfsync": "results/beta/eval/agfsync/tifa/shard-00000.tar"}
    inputs = dag.metric_inputs(cfg, "beta", "tifa")
    assert inputs["base"][0].startswith("results/world/eval/base/tifa/")
    assert inputs["agfsync"][0].startswith("results/beta/eval/agfsync/tifa/")
    targets = dag.final_targets(cfg)
    assert "results/beta/pairs.jsonl" not in targets and "results/beta/agfsync" in targets


def test_the_plan_counts_and_sizes_only_what_is_made(demo):
    one = plan(demo, gpu="H100", gpus=1)
    cfg = sweep(demo, "world", {"w": {"overrides": {"scores": {"weights": WEIGHTS}}},
                                "beta": {"overrides": {"train": {"beta_dpo": 1000}}}})
    three = plan(cfg, gpu="H100", gpus=1)
    jobs = rule_jobs(cfg)
    base = rule_jobs(demo)
    assert jobs["candidates_generate"] == base["candidates_generate"]
    assert (jobs["pairs_select"], jobs["train_cache"], jobs["train_dpo"]) == (2, 2, 3)
    assert jobs["eval_generate"] == base["eval_generate"] // 2 * 4  # one base, three fine-tuned per shard
    disk = {f["folder"]: f for f in three["disk"]}
    single = {f["folder"]: f for f in one["disk"]}
    for folder in ("results/{model}/candidates (PNG)", "results/{model}/scores"):
        assert disk[folder]["bytes"] == single[folder]["bytes"] > 0
        assert disk[folder]["per_model"]["w"] == disk[folder]["per_model"]["beta"] == 0
    assert disk["results/{model}/pairs.jsonl"]["bytes"] == 2 * single["results/{model}/pairs.jsonl"]["bytes"]
    items = {s["stage"]: s["items"] for s in three["stages"]}
    assert items["eval_generate"]["images"] == items["eval_score"]["images"] == 4 * 300  # 300 held-out prompts
    assert items["candidates_generate"]["images"] == items["candidates_score"]["images"] == 336 * 8
    assert items["pairs_select"]["pairs (at most)"] == 2 * 336


def test_snakemake_runs_the_shared_jobs_once_and_the_plan_agrees(tmp_path):
    """config/sweep_weights.yaml (the demo and a paper-weights variant) plus a beta variant and a
    CLIP-gamma variant, all `like: world` without candidates_from: Snakemake's dry run generates
    the candidates and draws the base images once, scores both twice (gamma's CLIP), selects
    pairs and encodes three times, trains four times; agfsync plan counts the same jobs."""
    from workflow_helpers import job_counts, snakemake, workdir

    spec = {"extends": "config/sweep_weights.yaml", "run_models": ["world", "world_paper", "beta", "gamma"],
            "models": {"beta": {"like": "world", "overrides": {"train": {"beta_dpo": 1000}}},
                       "gamma": {"like": "world", "overrides": {"scores": {"clip": {"gamma": 50}}}}}}
    cwd = workdir(tmp_path / "w")
    (cwd / "sweep.yaml").write_text(yaml.safe_dump(spec))
    result = snakemake(cwd, "-n", "--quiet", "rules", "--configfile", "sweep.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    dry = job_counts(result.stdout + result.stderr)
    dry.pop("all")
    assert rule_jobs(load_config(cwd / "sweep.yaml")) == dry
    # two candidate shards, scored twice (gamma's CLIP); pairs and caches of world, world_paper, gamma
    assert (dry["candidates_generate"], dry["candidates_score"]) == (2, 4)
    assert (dry["pairs_select"], dry["train_cache"], dry["train_dpo"]) == (3, 3, 4)
    # one evaluation shard: the base model's images once, scored twice; four fine-tuned models
    assert (dry["eval_generate"], dry["eval_score"]) == (5, 6)


def test_like_starts_a_model_from_another_and_names_bad_keys(demo):
    cfg = copy.deepcopy(demo)
    cfg["models"]["v"] = {"like": "w", "train": {"steps": 7}}
    cfg["models"]["w"] = {"like": "world", "resolution": 32}
    check_config(cfg)
    assert cfg["models"]["v"]["resolution"] == 32 and cfg["models"]["v"]["train"]["steps"] == 7
    assert cfg["models"]["v"]["pretrained"] == demo["models"]["world"]["pretrained"]
    assert cfg["models"]["v"]["generation"] == demo["models"]["world"]["generation"]
    assert check_config(copy.deepcopy(cfg))["models"] == cfg["models"]  # idempotent
    for bad, message in ((
            {"v": {"like": "nope"}}, "key 'models.v.like': 'nope' is not another model under 'models'"), (
            {"v": {"like": "u"}, "u": {"like": "v"}}, "key 'models.u.like': v -> u -> v is a cycle")):
        cfg = copy.deepcopy(demo)
        cfg["models"].update(bad)
        with pytest.raises(ConfigError) as err:
            check_config(cfg)
        assert message in str(err.value)


def test_the_owner_follows_like_and_candidates_from_not_the_order_of_run_models(demo):
    paper = {"like": "world", "overrides": {"scores": {"weights": WEIGHTS}}}
    beta = {"like": "world", "overrides": {"train": {"beta_dpo": 1000}}}
    for order in (["world", "p", "b"], ["b", "p", "world"], ["p", "b"]):  # world finished, then left out
        cfg = copy.deepcopy(demo)
        cfg["models"].update({"p": copy.deepcopy(paper), "b": copy.deepcopy(beta)})
        cfg["run_models"] = order
        check_config(cfg)
        assert sources(cfg, "b") == {s: "world" for s in sources(cfg, "b")}, order
        assert sources(cfg, "p")["candidates"] == sources(cfg, "p")["eval"] == "world"
        assert sources(cfg, "p")["pairs"] == "p"
        assert sharing.makers(cfg, "candidates") == ["world"]
    # an explicit candidates_from wins wherever its target stands, in run_models or not
    for order in (["w", "world"], ["w"]):
        cfg = copy.deepcopy(demo)
        cfg["models"]["w"] = {**copy.deepcopy(demo["models"]["world"]), "candidates_from": "world",
                              "overrides": {"scores": {"weights": WEIGHTS}}}
        cfg["run_models"] = order
        check_config(cfg)
        assert sharing.source(cfg, "candidates", "w") == sharing.source(cfg, "scores", "w") == "world", order
        assert sharing.source(cfg, "candidates", "world") == "world"
    assert rule_jobs(cfg)["candidates_generate"] == rule_jobs(demo)["candidates_generate"]


def test_a_config_changed_after_a_first_answer_gets_a_new_one(demo):
    cfg = sweep(demo, "world", {"v": {}})
    assert sharing.source(cfg, "candidates", "v") == "world"
    cfg["models"]["v"]["generation"]["steps"] = 5
    assert sharing.source(cfg, "candidates", "v") == "v"


def test_jobs_get_the_checkout_on_pythonpath_once(monkeypatch, tmp_path):
    import os

    from agfsync.core.jobs import put_on_pythonpath

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/x", str(tmp_path)]))
    put_on_pythonpath(tmp_path)
    put_on_pythonpath(tmp_path)
    assert os.environ["PYTHONPATH"] == os.pathsep.join([str(tmp_path), "/x"])


def test_a_frozen_config_keeps_its_answers_without_being_compared_again(demo):
    cfg = sweep(demo, "world", {"v": {}})
    sharing.freeze(cfg)
    assert sharing.source(cfg, "candidates", "v") == "world"
    cfg["models"]["v"]["generation"]["steps"] = 5  # broken promise: the memoised answer stands
    assert sharing.source(cfg, "candidates", "v") == "world"
    assert sharing.source(copy.deepcopy(cfg), "candidates", "v") == "v"
