"""Which model's output a model's stage reads: outputs are shared whenever what determines them
agrees (pure: no torch, no Snakemake).

Outputs live under `results/{model}/`, but a model does not always make its own. Each stage
output has an identity: the digest of its job's params as the model sees them (the config keys
its rule declares, agfsync.core.dag.DECLARED, with the model's overrides merged and the model's
name taken out) and of the identity of what the job reads. Two models whose stage outputs have
the same identity would compute the same thing, so one of them writes it and the others read
it (`source`, the owner: found by following `candidates_from` and `like` while the output
would be the same, so that reordering `run_models` or leaving a finished model out of it moves
no output; entries with no such link share with the first run model whose output is the same):

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
(agfsync.core.overrides checks that they agree). Answers are memoised per config as it is (a
config changed after a first answer gets new ones).
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

_MEMO: dict[int, tuple[str, dict]] = {}
_FROZEN: dict[int, dict] = {}


def freeze(config: dict) -> None:
    """Promise that `config` no longer changes (the workflow's, once checked): its answers are
    then memoised without comparing the config on every call (thousands per dry run)."""
    _FROZEN[id(config)] = config


def _memo(config: dict) -> dict:
    """Results for this config as it is now (a config mutated since is a new one)."""
    held = _MEMO.get(id(config))
    if held is not None and _FROZEN.get(id(config)) is config:
        return held[1]
    fingerprint = json.dumps(config, default=str)
    if held is None or held[0] != fingerprint:
        if len(_MEMO) > 64:
            _MEMO.clear()
        held = _MEMO[id(config)] = (fingerprint, {})
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
    return _identity(config, _memo(config), stage, model, bench, kind)


def _identity(config: dict, memo: dict, stage: str, model: str, bench=None, kind=None) -> str:
    key = ("identity", stage, model, bench, kind)
    if key not in memo:
        if stage in CHAIN:
            rule, upstream = CHAIN[stage]
            parts = [stage, _params(config, rule, model), upstream and _identity(config, memo, upstream, model)]
        elif stage == "eval":
            parts = [stage, bench, _params(config, "eval_generate", model, bench=bench)]
        elif stage == "per_image":
            from agfsync.core.rewards import REWARDS

            if kind in REWARDS:
                own = _params(config, "eval_reward", model, reward=kind)
            else:
                own = _params(config, "eval_score", model, bench=bench)
            parts = [stage, kind, own, _identity(config, memo, "eval", model, bench)]
        else:
            raise ValueError(f"unknown stage {stage!r} ({', '.join([*CHAIN, 'eval', 'per_image'])})")
        memo[key] = _digest(parts)
    return memo[key]


def _anchors(config: dict, stage: str, model: str) -> list[str]:
    """The models a model names as its origin for `stage`: its candidates_from (candidates and
    scores), then its like."""
    entry = (config.get("models") or {}).get(model) or {}
    names = [entry.get("candidates_from")] if stage in ("candidates", "scores") else []
    return [name for name in (*names, entry.get("like")) if name and name in config.get("models", {})]


def _root(config: dict, memo: dict, stage: str, model: str, key: tuple) -> str:
    """Follow the model's anchors while their output of `stage` is the same as its own."""
    seen, mine = [model], _identity(config, memo, stage, model, *key)
    while True:
        nxt = next((a for a in _anchors(config, stage, seen[-1]) if a not in seen
                    and _identity(config, memo, stage, a, *key) == mine), None)
        if nxt is None:
            return seen[-1]
        seen.append(nxt)


def source(config: dict, stage: str, model: str, bench: str | None = None, kind: str | None = None) -> str:
    """The model whose output of `stage` `model` reads (its owner). Stable under reordering
    `run_models`: the owner is found by following the model's candidates_from and like while
    the output would be the same; where that ends at a model outside `run_models`, that model
    owns it (its jobs write under its name); otherwise the first run model whose own chain ends
    there too, or, for entries with no such link, the first run model with the same output."""
    memo = _memo(config)
    key = ("source", stage, model, bench, kind)
    if key not in memo:
        args = (bench, kind)
        root = _root(config, memo, stage, model, args)
        runs = [m for m in config.get("run_models", []) if m in config.get("models", {})]
        if root not in runs:
            memo[key] = root
        else:
            mine = _identity(config, memo, stage, model, *args)
            roots = [r for r in (_root(config, memo, stage, m, args) for m in runs
                                 if _identity(config, memo, stage, m, *args) == mine) if r in runs]
            memo[key] = roots[0] if roots else root
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
    """The models whose output of `stage` the run models read, in run order: the jobs `rule
    all` runs for the stage (agfsync plan counts them)."""
    found = (source(config, stage, m, bench, kind) for m in config.get("run_models", []))
    return list(dict.fromkeys(found))
