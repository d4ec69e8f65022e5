"""Experiments side by side in one checkout: per-model settings (models.<name>.overrides),
variants that reuse another model's candidates (models.<name>.candidates_from; a weights sweep
generates and scores once) (agfsync.core.overrides), and runs in their own directory
(`snakemake --directory RUN`: the default config is found in the checkout)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from agfsync.core import dag
from agfsync.core.config import ConfigError, check_config, locate_config, resolve_config
from agfsync.core.overrides import candidates_model, for_model, merged_train

REPO = Path(__file__).resolve().parents[1]


def with_lora(demo_config, **overrides):
    cfg = copy.deepcopy(demo_config)
    cfg["models"]["sd15"]["overrides"] = {"train": overrides}
    return check_config(cfg)


def test_train_overrides_reach_only_their_models_jobs(demo_config):
    cfg = with_lora(demo_config, lora_rank=4, snapshots=[0.5])
    assert dag.stage_params(cfg, "train_dpo", model="sd15")["train"]["lora_rank"] == 4
    assert dag.stage_params(cfg, "train_dpo", model="sd15")["train"]["snapshots"] == [0.5]
    assert dag.stage_params(cfg, "train_dpo", model="sdxl")["train"]["lora_rank"] is None
    assert dag.stage_params(cfg, "train_dpo", model="sdxl")["train"] == dag.stage_params(demo_config, "train_dpo",
                                                                                         model="sdxl")["train"]
    # the merged section is what the stage reads, and the global one is untouched
    assert dag.stage_settings(cfg, "train_dpo", model="sd15").train.lora_rank == 4
    assert cfg["train"]["lora_rank"] is None and for_model(cfg, "sdxl") is cfg
    assert merged_train(cfg, "sd15") == {**cfg["train"], "lora_rank": 4, "snapshots": [0.5]}


@pytest.mark.parametrize("overrides, message", [
    ({"gpus": 4}, "key 'models.sd15.overrides.train.gpus': cannot differ per model (gpus, nodes, launch are the same "
                  "for every model)"),
    ({"lora_rank": 0}, "key 'models.sd15.overrides.train.lora_rank': 0 is less than the minimum of 1"),
    ({"loss": "ipo"}, "key 'models.sd15.overrides.train.loss': 'ipo' is not one of"),
])
def test_bad_train_overrides_name_the_models_key(demo_config, overrides, message):
    with pytest.raises(ConfigError) as err:
        with_lora(demo_config, **overrides)
    assert message in str(err.value)


def test_the_default_config_is_found_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert locate_config("config/config.yaml") == REPO / "config" / "config.yaml"
    assert resolve_config({})["run_models"] == ["sd14", "sd15", "sdxl"]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("extends: null\n")
    assert locate_config("config/config.yaml") == Path("config/config.yaml")  # the run directory's own comes first


def test_snakemake_directory_runs_the_paper_dag_outside_the_checkout(tmp_path):
    snakemake = Path(sys.executable).parent / "snakemake"
    out = subprocess.run([str(snakemake), "-n", "--quiet", "rules", "-s", str(REPO / "workflow" / "Snakefile"),
                          "--directory", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "train_dpo" in out.stdout + out.stderr
    assert not list(tmp_path.glob("results/*"))  # a dry run writes nothing


def variant(demo_config, name="sd15_w", **extra):
    cfg = copy.deepcopy(demo_config)
    cfg["models"][name] = {**copy.deepcopy(cfg["models"]["sd15"]), "candidates_from": "sd15",
                           "overrides": {"scores": {"weights": {"vqa": 0.6, "clip": 0.3, "aesthetic": 0.1}}}, **extra}
    cfg["run_models"] = ["sd15", name]
    return cfg


def test_a_weights_variant_reuses_the_candidates_and_scores_and_selects_its_own_pairs(demo_config):
    cfg = check_config(variant(demo_config))
    assert candidates_model(cfg, "sd15_w") == "sd15" and candidates_model(cfg, "sd15") == "sd15"
    assert dag.stage_params(cfg, "pairs_select", model="sd15_w")["scores"]["weights"] == {
        "aesthetic": 0.1, "clip": 0.3, "vqa": 0.6}
    assert dag.stage_params(cfg, "pairs_select", model="sd15")["scores"]["weights"] == cfg["scores"]["weights"]
    # the scorers' params are the same for both models: the scores are the same files
    assert dag.stage_params(cfg, "candidates_score", model="sd15_w") == dag.stage_params(cfg, "candidates_score",
                                                                                          model="sd15")
    paths = dag.report_paths(cfg)["sd15_w"]
    assert paths["candidate_shards"]["00000"] == "results/sd15/candidates/shard-00000.tar"
    assert paths["pairs"] == "results/sd15_w/pairs.jsonl"


@pytest.mark.parametrize("change, message", [
    ({"candidates_from": "nope"}, "key 'models.sd15_w.candidates_from': 'nope' is not another model"),
    ({"resolution": 32}, "key 'models.sd15_w.candidates_from': sd15_w and sd15 differ in models.<name>.resolution"),
    ({"overrides": {"candidates": {"sigma": 0.2}}},
     "key 'models.sd15_w.candidates_from': sd15_w and sd15 differ in candidates (overrides)"),
    ({"overrides": {"scores": {"weights": {"vqa": 0.6, "clip": 0.6, "aesthetic": 0.1}}}},
     "key 'models.sd15_w.overrides.scores.weights': weights must sum to 1, got 1.3"),
    ({"overrides": {"candidates": {"shard_size": 4}}},
     "key 'models.sd15_w.overrides.candidates.shard_size': cannot differ per model"),
])
def test_a_variant_that_would_not_share_its_candidates_is_refused(demo_config, change, message):
    with pytest.raises(ConfigError) as err:
        check_config(variant(demo_config, **change))
    assert message in str(err.value)


def test_a_two_variant_weights_sweep_on_the_demo_generates_and_scores_once(tmp_path):
    """config/demo.yaml plus a variant with other score weights: the dry run generates and scores
    the candidates of one model, and selects pairs, trains and evaluates two."""
    import yaml

    snakemake = Path(sys.executable).parent / "snakemake"
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    world = demo["run_models"][0]
    sweep = {"extends": "config/demo.yaml", "run_models": [world, f"{world}_w"],
             "models": {f"{world}_w": {**demo["models"][world], "candidates_from": world,  # the paper's weights
                                       "overrides": {"scores": {"weights": {"vqa": 0.35, "clip": 0.55, "aesthetic": 0.1}}}}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    counts = {}
    for name, args in (("one", ["--configfile", "config/demo.yaml"]), ("two", ["--configfile", str(tmp_path / "sweep.yaml")])):
        out = subprocess.run([str(snakemake), "-n", "--quiet", "rules", "--forceall", *args], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        rows = [line.split() for line in out.stdout.splitlines()]
        counts[name] = {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}
    one, two = counts["one"], counts["two"]
    assert two["candidates_generate"] == one["candidates_generate"] > 0
    assert two["candidates_score"] == one["candidates_score"]
    assert (two["pairs_select"], two["train_dpo"]) == (2 * one["pairs_select"], 2 * one["train_dpo"])
