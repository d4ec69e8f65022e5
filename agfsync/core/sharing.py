"""Which model's output a model's stage reads: outputs are shared whenever what determines them
agrees (pure: no torch, no Snakemake).

Outputs live under `results/{model}/`, but a model does not always make its own. Each stage
output has an identity: the digest of its job's params as the model sees them (the config keys
its rule declares, agfsync.core.dag.DECLARED, with the model's overrides merged and the model's
name taken out) and of the identity of what the job reads. Two models whose stage outputs have
the same identity would compute the same thing, so the later one in `run_models` reads the
earlier one's (`source`):

  candidates    candidates_generate: generation settings, `candidates`
  scores        candidates_score: the stage-3 scorers, on the candidates
  pairs         pairs_select: `pairs`, `scores.weights`, on the scores
  train_cache   train_cache: the model's VAE and text encoder, `train.latents`, on the pairs
  eval          eval_generate of the base model (per benchmark): the same images for every
                model with the same base model and generation settings
  per_image     eval_score or eval_reward of those images

So a weights ablation generates and scores once, a beta or lr ablation also selects pairs and
encodes them once, and every variant of one base model shares its base evaluation images. The
fine-tuned model and everything after it are never shared. Sharing is never wrong: any setting
that could change an output changes its identity (and its params, so Snakemake reruns it).
`models.<name>.candidates_from` names the model whose candidates and scores a model must reuse
(agfsync.core.overrides checks that they agree); the automatic choice gives the same content.
"""

from __future__ import annotations

import hashlib
import json

# stage: (rule, the stage whose output its job reads)
CHAIN = {
    "candidates": ("candidates_generate", None),
    "scores": ("candidates_score", "candidates"),
    "pairs": ("pairs_select", "scores"),
    "train_cache": ("train_cache", "pairs"),
}
# Model-entry keys that are not settings of any job: how the model is wired, not what it computes.
WIRING = ("overrides", "candidates_from", "like")

_MEMO: dict[int, tuple[dict, dict]] = {}


def _memo(config: dict) -> dict:
    held = _MEMO.get(id(config))
    if held is None or held[0] is not config:
        held = _MEMO[id(config)] = (config, {})
    return held[1]


def _params(config: dict, rule: str, model: str, **wildcards) -> dict:
    from agfsync.core.dag import stage_params

    params = stage_params(config, rule, model=model, **wildcards)
    models = params.get("models")
    if isinstance(models, dict) and model in models:
        entry = models[model]
        if isinstance(entry, dict):
            entry = {key: value for key, value in entry.items() if key not in WIRING}
        params = {**params, "models": {"*": entry}}
    return params


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:20]


def identity(config: dict, stage: str, model: str, bench: str | None = None, kind: str | None = None) -> str:
    """The digest of what determines `model`'s output of `stage` (CHAIN, or "eval" / "per_image"
    of the base model's images of `bench`; `kind` "per_image" or a reward's name)."""
    memo = _memo(config)
    key = ("identity", stage, model, bench, kind)
    if key not in memo:
        if stage in CHAIN:
            rule, upstream = CHAIN[stage]
            parts = [stage, _params(config, rule, model), upstream and identity(config, upstream, model)]
        elif stage == "eval":
            parts = [stage, bench, _params(config, "eval_generate", model, bench=bench)]
        elif stage == "per_image":
            from agfsync.core.rewards import REWARDS

            if kind in REWARDS:
                own = _params(config, "eval_reward", model, reward=kind)
            else:
                own = _params(config, "eval_score", model, bench=bench)
            parts = [stage, kind, own, identity(config, "eval", model, bench)]
        else:
            raise ValueError(f"unknown stage {stage!r} ({', '.join([*CHAIN, 'eval', 'per_image'])})")
        memo[key] = _digest(parts)
    return memo[key]


def source(config: dict, stage: str, model: str, bench: str | None = None, kind: str | None = None) -> str:
    """The model whose output of `stage` `model` reads: the first of `run_models` (then the
    model named by its candidates_from, then itself) whose output has the same identity."""
    memo = _memo(config)
    key = ("source", stage, model, bench, kind)
    if key not in memo:
        entry = (config.get("models") or {}).get(model) or {}
        pool = [*config.get("run_models", []), *([entry["candidates_from"]] if entry.get("candidates_from") else [])]
        mine = identity(config, stage, model, bench, kind)
        memo[key] = next((other for other in pool if other in config.get("models", {})
                          and identity(config, stage, other, bench, kind) == mine), model)
    return memo[key]


def eval_source(config: dict, model: str, variant: str, bench: str, kind: str) -> str:
    """The model whose evaluation files of `variant` `model` reads: base images ("shard") and
    their scores ("per_image" or a reward) are shared; the fine-tuned model's never are."""
    if variant != "base":
        return model
    if kind == "shard":
        return source(config, "eval", model, bench)
    return source(config, "per_image", model, bench, kind)


def shared(config: dict) -> dict:
    """Per run model, the stages it reads from another model: {model: {stage: source}} (the
    plan and the report say what is shared)."""
    out = {}
    for model in config.get("run_models", []):
        found = {stage: source(config, stage, model) for stage in CHAIN}
        found = {stage: other for stage, other in found.items() if other != model}
        if found:
            out[model] = found
    return out


def makers(config: dict, stage: str, bench: str | None = None, kind: str | None = None) -> list[str]:
    """The run models whose output of `stage` is their own (no earlier model's is the same), in
    run order: the jobs `rule all` runs for the stage (agfsync plan counts them)."""
    return [m for m in config.get("run_models", []) if source(config, stage, m, bench, kind) == m]
