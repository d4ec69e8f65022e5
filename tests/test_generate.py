"""`agfsync generate` on the tiny models: the evaluation's images for a benchmark's prompts
(bit for bit), further images per prompt, the fine-tuned variant, the grid, and errors that
name what is missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from helpers import on_tiny_models, settings
from PIL import Image

from agfsync.cli import main
from agfsync.core.io import read_jsonl, write_jsonl
from agfsync.core.shards import Shard

RECORDS = [{"id": f"photo-{i:03d}", "prompt": p, "group": "photo"} for i, p in enumerate(
    ["a red bicycle against a wall", "a bowl of ramen", "fog over a forest"])]


@pytest.fixture
def run_dir(demo_config, tiny_models, tmp_path, monkeypatch):
    """A working directory with a config on the tiny models and the HPS v2 prompt list."""
    from diffusers import UNet2DConditionModel

    cfg = {**on_tiny_models(demo_config, tiny_models), "extends": None}
    cfg["eval"] = {**cfg["eval"], "shard_size": 2, "prompts_per_batch": 8}  # 3 prompts: shards of 2 and 1
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    write_jsonl(tmp_path / "results/eval/hpsv2/prompts.jsonl", RECORDS)
    UNet2DConditionModel.from_pretrained(tiny_models / "sd1" / "unet").save_pretrained(tmp_path / "tuned" / "unet")
    monkeypatch.chdir(tmp_path)
    return tmp_path, cfg


def png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_a_benchmarks_first_images_are_the_evaluations_and_variants_sit_side_by_side(run_dir):
    from agfsync.core.jobs import set_cpu_threads
    from agfsync.stages import evaluate

    tmp, cfg = run_dir
    set_cpu_threads(cfg["cpu_threads"])  # as the command does: the same float sums
    evaluation = {}
    for number, shard_records in enumerate((RECORDS[:2], RECORDS[2:])):  # the workflow's eval shards
        evaluate.generate_eval_shard(settings(cfg, "eval_generate", model="sd15"), "sd15", "hpsv2", "base",
                                     shard_records, tmp / f"eval{number}.tar", progress=False)
        with Shard(tmp / f"eval{number}.tar") as shard:
            evaluation.update({r["prompt_id"]: np.asarray(shard.image(r)) for r in shard.rows})

    assert main(["generate", "--config", "cfg.yaml", "--model", "sd15", "--benchmark", "hpsv2", "--out", "one"]) == 0
    for record in RECORDS:  # one image per prompt: the evaluation's, bit for bit
        assert np.array_equal(png(tmp / "one/base" / f"{record['id']}-0.png"), evaluation[record["id"]])

    assert main(["generate", "--config", "cfg.yaml", "--model", "sd15", "--benchmark", "hpsv2", "--n", "2",
                 "--variant", "base", "--variant", "agfsync", "--unet", "tuned", "--out", "gen"]) == 0
    rows = {v: read_jsonl(tmp / "gen" / v / "images.jsonl") for v in ("base", "agfsync")}
    assert [(r["prompt_id"], r["k"]) for r in rows["base"]] == [(r["id"], k) for r in RECORDS for k in (0, 1)]
    assert rows["agfsync"][0]["unet"] == "tuned/unet" and rows["base"][0]["unet"] is None
    assert {r["scope"] for r in rows["base"]} == {"hpsv2"}
    for record in RECORDS:
        first, second = png(tmp / "gen/base" / f"{record['id']}-0.png"), png(tmp / "gen/base" / f"{record['id']}-1.png")
        assert np.abs(first.astype(int) - evaluation[record["id"]]).max() <= 2  # the same draw, in a larger batch
        assert np.abs(first.astype(int) - second).mean() > 10  # image 2 is another draw
        assert np.array_equal(png(tmp / "gen/agfsync" / f"{record['id']}-0.png"), first)  # the same UNet weights
    h, w = first.shape[:2]
    grid = png(tmp / "gen/grid.png")
    assert grid.shape == (3 * h, 4 * w + max(2, w // 32), 3)  # 3 prompts; base x2 | gap | agfsync x2
    assert np.array_equal(grid[h : 2 * h, w : 2 * w], png(tmp / "gen/base" / f"{RECORDS[1]['id']}-1.png"))

    # a rerun writes the same bytes
    first_bytes = (tmp / "gen/base" / f"{RECORDS[0]['id']}-0.png").read_bytes()
    assert main(["generate", "--config", "cfg.yaml", "--model", "sd15", "--benchmark", "hpsv2", "--max-prompts", "1",
                 "--out", "again"]) == 0
    assert (tmp / "again/base" / f"{RECORDS[0]['id']}-0.png").read_bytes() == first_bytes
    assert len(read_jsonl(tmp / "again/base/images.jsonl")) == 1 and not (tmp / "again/agfsync").exists()


def test_prompts_by_hand_and_from_a_file_get_stable_ids(run_dir):
    tmp, _ = run_dir
    (tmp / "prompts.txt").write_text("a bowl of ramen\n\nfog over a forest\n")
    write_jsonl(tmp / "prompts.jsonl", [{"prompt": "a bowl of ramen"}, {"id": "fog-1", "prompt": "fog over a forest"}])
    assert main(["generate", "--config", "cfg.yaml", "--model", "sdxl", "--prompts", "prompts.jsonl", "--out", "j"]) == 0
    assert [r["prompt_id"] for r in read_jsonl(tmp / "j/base/images.jsonl")] == ["p-adf9e5aeba", "fog-1"]
    assert main(["generate", "--config", "cfg.yaml", "--model", "sdxl", "--prompts", "prompts.txt", "--out", "f"]) == 0
    assert main(["generate", "--config", "cfg.yaml", "--model", "sdxl", "--prompt", "a bowl of ramen", "--prompt",
                 "fog over a forest", "--out", "p"]) == 0
    by_file, by_hand = read_jsonl(tmp / "f/base/images.jsonl"), read_jsonl(tmp / "p/base/images.jsonl")
    assert [r["prompt_id"] for r in by_file] == [r["prompt_id"] for r in by_hand] == ["p-adf9e5aeba", "p-334e6394a2"]
    assert (tmp / "f/base/p-adf9e5aeba-0.png").read_bytes() == (tmp / "p/base/p-adf9e5aeba-0.png").read_bytes()
    assert {r["scope"] for r in by_hand} == {"generate"}


@pytest.mark.parametrize("argv, message", [
    (["--benchmark", "tifa"], "results/eval/tifa/prompts.jsonl: no prompt list of the tifa benchmark here; make it "
                              "with `snakemake results/eval/tifa/prompts.jsonl --configfile cfg.yaml`"),
    (["--benchmark", "hpsv2", "--variant", "agfsync"], "variant agfsync: results/sd15/agfsync/unet: no fine-tuned UNet "
                                                       "folder (train the model first: snakemake results/sd15/agfsync)"),
    (["--prompts", "missing.jsonl"], "missing.jsonl: no such prompts file"),
    (["--prompt", "a cat", "--prompt", "a cat"], "generate, prompt 2: duplicate prompt id 'p-008bd0f066' (first at prompt 1)"),
])
def test_errors_name_what_is_missing(run_dir, capsys, argv, message):
    assert main(["generate", "--config", "cfg.yaml", "--model", "sd15", "--out", "x", *argv]) == 2
    assert message in capsys.readouterr().err
