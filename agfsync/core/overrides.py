"""Variants side by side in one results tree (pure: no torch).

`models.<name>.overrides` sets sections of the config for that model only, merged key by key
into what its jobs see: `train` (not gpus, nodes, launch: the training job's resources, the
same for every model), `pairs`, `scores`, `candidates` (not shard_size: the shard list is
fixed for the whole DAG). `models.<name>.like: <other>` starts the entry from another
model's (inherit_models), so a variant names only what it changes. Outputs are shared wherever they would be the same
(agfsync.core.sharing); `models.<name>.candidates_from: <other>` insists on reusing the other
model's candidate shards and scores, and is refused unless everything that made them is the
same: the model's generation settings, `candidates`, and the scorers (`scores.vqa`,
`scores.clip`, `scores.aesthetic`). So

    models:
      sd15:      {...}
      sd15_w55:  {like: sd15, overrides: {scores: {weights: {vqa: 0.55, clip: 0.35, aesthetic: 0.10}}}}
      sd15_lora: {like: sd15, overrides: {train: {lora_rank: 8}}}

generates and scores sd15's candidates once, selects pairs twice (sd15_lora reuses sd15's)
and trains three times. Every
job of a model sees the merged sections (agfsync.core.dag.stage_params, and the `agfsync`
commands with --model), so its params, and so Snakemake's reruns, follow the model's own
settings; the merged sections are validated as the global ones, errors naming the model's key.
"""

from __future__ import annotations

import copy

SECTIONS = ("train", "pairs", "scores", "candidates")
FIXED = {"train": ("gpus", "nodes", "launch"), "candidates": ("shard_size",)}
# What made a model's candidates and their scores: a model may reuse another's only if these agree.
CANDIDATE_MODEL_KEYS = ("family", "pretrained", "revision", "resolution", "prediction_type", "generation")
CANDIDATE_SECTIONS = ("candidates", "scores.vqa", "scores.clip", "scores.aesthetic")


def inherit_models(cfg: dict) -> list[str]:
    """`models.<name>.like: <other>`: the entry is <other>'s (its `like` and `candidates_from`
    left out) with its own keys merged on top, key by key, so that a variant names only what
    it changes. In place, before the schema sees the entries (idempotent); the errors name the key."""
    from agfsync.core.config import merge_config

    models = cfg.get("models")
    if not isinstance(models, dict):
        return []
    errors, done = [], set()

    def resolve(name: str, chain: tuple) -> None:
        entry = models[name]
        other = entry.get("like") if isinstance(entry, dict) else None
        if name in done or other is None:
            return done.add(name)
        key = f"key 'models.{name}.like'"
        if not isinstance(other, str) or other not in models or other == name:
            return errors.append(f"{key}: {other!r} is not another model under 'models' (defined: {', '.join(models)})")
        if other in chain:
            return errors.append(f"{key}: {' -> '.join((*chain, other))} is a cycle")
        resolve(other, (*chain, other))
        base = {k: v for k, v in (models[other] or {}).items() if k not in ("like", "candidates_from")}
        models[name] = merge_config(base, entry)
        done.add(name)

    for name in list(models):
        resolve(name, (name,))
    return errors


def _overrides(config: dict, model: str | None) -> dict:
    return ((config.get("models") or {}).get(model) or {}).get("overrides") or {} if model else {}


def merged(config: dict, model: str, section: str) -> dict:
    """One top-level section as a job of `model` sees it: the global one with the model's overrides."""
    from agfsync.core.config import merge_config

    override = _overrides(config, model).get(section)
    return merge_config(config[section], copy.deepcopy(override)) if override else config[section]


def merged_train(config: dict, model: str) -> dict:
    return merged(config, model, "train")


def for_model(config: dict, model: str | None) -> dict:
    """The config as a job of `model` sees it (itself when the model overrides nothing)."""
    overrides = _overrides(config, model)
    if not overrides:
        return config
    return {**config, **{section: merged(config, model, section) for section in overrides}}


def candidates_model(config: dict, model: str) -> str:
    """The model whose candidate shards and scores `model` uses: itself, or an earlier run model
    (or its candidates_from) whose would be the same (agfsync.core.sharing)."""
    from agfsync.core.sharing import source

    return source(config, "scores", model)


def _get(node, dotted: str):
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def override_errors(cfg: dict, schema: dict, validator) -> list[str]:
    """Every model's overridden sections checked against their schema (`schema`: the whole config
    schema), and every candidates_from against what made the candidates; each error names the
    model's key."""
    errors = []
    models = cfg.get("models") or {}
    for name, model in models.items():
        overrides = (model or {}).get("overrides") or {}
        for section, values in overrides.items():
            fixed = sorted(set(values or {}) & set(FIXED.get(section, ())))
            if fixed:
                errors.append(f"key 'models.{name}.overrides.{section}.{fixed[0]}': cannot differ per model ("
                              f"{', '.join(FIXED[section])} are the same for every model)")
                continue
            if not isinstance(cfg.get(section), dict):
                continue
            sub = {"$defs": schema.get("$defs", {}), **schema["properties"][section]}
            for error in validator(sub).iter_errors(copy.deepcopy(merged(cfg, name, section))):
                path = [str(p) for p in error.absolute_path]
                if path and _get(values, ".".join(path[:1])) is not None:
                    errors.append(f"key 'models.{name}.overrides.{section}.{'.'.join(path)}': {error.message}")
        weights = (overrides.get("scores") or {}).get("weights")
        if weights and isinstance(cfg.get("scores"), dict):
            total = sum(merged(cfg, name, "scores")["weights"].values())
            if abs(total - 1.0) > 1e-6:
                errors.append(f"key 'models.{name}.overrides.scores.weights': weights must sum to 1, got {total:g}")
        errors += _candidates_from_errors(cfg, name, model or {})
    return errors


def _candidates_from_errors(cfg: dict, name: str, model: dict) -> list[str]:
    source = model.get("candidates_from")
    if not source:
        return []
    key = f"key 'models.{name}.candidates_from'"
    models = cfg.get("models") or {}
    if source not in models or source == name:
        return [f"{key}: {source!r} is not another model under 'models' (defined: {', '.join(models)})"]
    if (models[source] or {}).get("candidates_from"):
        return [f"{key}: {source!r} itself reuses {models[source]['candidates_from']!r}; name that model instead"]
    for field in CANDIDATE_MODEL_KEYS:
        if model.get(field) != models[source].get(field):
            return [f"{key}: {name} and {source} differ in models.<name>.{field}, so {source}'s candidates are not "
                    f"{name}'s"]
    mine, theirs = for_model(cfg, name), for_model(cfg, source)
    for dotted in CANDIDATE_SECTIONS:
        if _get(mine, dotted) != _get(theirs, dotted):
            return [f"{key}: {name} and {source} differ in {dotted} (overrides), so {source}'s candidates and scores "
                    f"are not {name}'s"]
    return []
