"""Bad training input fails at once with a clear message."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import settings
from train_helpers import toy_cache

from agfsync.core.io import DataError
from agfsync.train.data import PairCache, build_train_cache, save_chunk


def test_empty_pairs_file(demo_config, tmp_path):
    (tmp_path / "pairs.jsonl").write_text("")
    with pytest.raises(DataError, match=r"pairs.jsonl: no preference pairs \(the file is empty\); there is nothing"):
        build_train_cache(settings(demo_config, "train_cache", model="sd15"), "sd15", tmp_path / "pairs.jsonl",
                          tmp_path / "cache")


def test_corrupt_chunk_fails_with_its_name(tmp_path):
    cache = toy_cache(tmp_path / "cache")
    chunk = cache / "chunk-00001.safetensors"
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    pairs = PairCache(cache)
    assert pairs.get([0, 1])["latents_w"].shape == (2, 4, 8, 8)  # chunk 0 is fine
    with pytest.raises(DataError, match=r"chunk-00001.safetensors: checksum mismatch \(corrupt or changed\); rebuild"):
        pairs.get([9])


def test_non_finite_record_names_chunk_record_and_prompt(tmp_path):
    cache = toy_cache(tmp_path / "cache")
    from safetensors.torch import load_file

    tensors = load_file(str(cache / "chunk-00000.safetensors"))
    tensors["latents_l"][3, 0, 0, 0] = float("nan")
    entry = save_chunk(cache, 0, tensors)
    index = json.loads((cache / "index.json").read_text())
    index["chunks"][0] = entry
    (cache / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"chunk-00000.safetensors, record 3 \(pair 3, prompt toy-0000000003\): "
                                        r"non-finite values in latents_l"):
        PairCache(cache).get([0])


def test_missing_chunk(tmp_path):
    cache = toy_cache(tmp_path / "cache")
    (cache / "chunk-00001.safetensors").unlink()
    with pytest.raises(DataError, match=r"chunk-00001.safetensors is missing; rebuild the cache"):
        PairCache(cache)


def test_more_gpus_than_present_fails_before_launch(demo_config, tmp_path, monkeypatch):
    from agfsync.train import launch

    launched = []
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: launched.append(a))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cfg = {**demo_config, "device": "auto", "train": {**demo_config["train"], "gpus": 4}}
    with pytest.raises(RuntimeError, match=r"train.gpus asks for 4 GPU\(s\) per node but this node has 2 CUDA "
                                           r"device\(s\); lower train.gpus, or set device: cpu"):
        launch.run_training(settings(cfg, "train_dpo", model="sd15"), "sd15", tmp_path / "c", tmp_path / "o",
                            tmp_path / "k")
    assert launched == []


def test_global_batch_must_split_over_processes(demo_config, tiny_models, tmp_path):
    from train_helpers import run_trainer, toy_config

    cfg = toy_config(demo_config, tiny_models)
    cfg["models"]["sd15"]["train"].update({"global_batch": 5, "micro_batch": 1})
    result = run_trainer(cfg, toy_cache(tmp_path / "cache"), tmp_path / "out", tmp_path / "ckpt", processes=2)
    assert result.returncode != 0
    assert "models.sd15.train.global_batch (5) must be a multiple of micro_batch (1) x processes (2)" in result.stderr
