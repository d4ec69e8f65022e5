"""Per-model training settings: `models.<name>.train_overrides` sets keys of the global `train`
section for that model only (pure: no torch).

    models:
      sdxl:      {..., train: {lr: 1.0e-6, ...}}
      sdxl_lora: {..., train: {lr: 1.0e-4, ...}, train_overrides: {lora_rank: 8}}

runs a full fine-tune and a LoRA one side by side in one results tree. Every job of a model
sees the merged section as `train` (agfsync.core.dag.stage_params, and the `agfsync` commands
with --model), so its params, and so Snakemake's reruns, follow the model's own settings.
gpus, nodes and launch are left out: they are the training job's resources (the same for
every model, agfsync.core.dag.train_resources). The merged section is validated as the
global one, errors naming the model's key.
"""

from __future__ import annotations

import copy

FIXED = ("gpus", "nodes", "launch")  # the training job's resources: global only


def merged_train(config: dict, model: str) -> dict:
    """The `train` section a job of `model` sees: the global one with the model's overrides."""
    from agfsync.core.config import merge_config

    overrides = (config.get("models", {}).get(model) or {}).get("train_overrides") or {}
    return merge_config(config["train"], copy.deepcopy(overrides)) if overrides else config["train"]


def for_model(config: dict, model: str | None) -> dict:
    """The config as a job of `model` sees it (itself when the model overrides nothing)."""
    if not model or not (config.get("models", {}).get(model) or {}).get("train_overrides"):
        return config
    return {**config, "train": merged_train(config, model)}


def override_errors(cfg: dict, train_schema: dict, validator) -> list[str]:
    """The merged section of every model with overrides, checked against the train schema;
    each error names models.<name>.train_overrides.<key>."""
    errors = []
    for name, model in (cfg.get("models") or {}).items():
        overrides = (model or {}).get("train_overrides") or {}
        if not overrides or not isinstance(cfg.get("train"), dict):
            continue
        merged = merged_train(cfg, name)
        for error in validator(train_schema).iter_errors(copy.deepcopy(merged)):
            path = [str(p) for p in error.absolute_path]
            if path and path[0] in overrides:
                errors.append(f"key 'models.{name}.train_overrides.{'.'.join(path)}': {error.message}")
    return errors
