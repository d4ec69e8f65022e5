"""Experiments side by side in one checkout: per-model training settings
(models.<name>.train_overrides, agfsync.core.overrides) and runs in their own directory
(`snakemake --directory RUN`: the default config is found in the checkout)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from agfsync.core import dag
from agfsync.core.config import ConfigError, check_config, locate_config, resolve_config
from agfsync.core.overrides import for_model, merged_train

REPO = Path(__file__).resolve().parents[1]


def with_lora(demo_config, **overrides):
    cfg = copy.deepcopy(demo_config)
    cfg["models"]["sd15"]["train_overrides"] = overrides
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
    ({"gpus": 4}, "key 'models.sd15.train_overrides'"),
    ({"lora_rank": 0}, "key 'models.sd15.train_overrides.lora_rank': 0 is less than the minimum of 1"),
    ({"loss": "ipo"}, "key 'models.sd15.train_overrides.loss': 'ipo' is not one of"),
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
