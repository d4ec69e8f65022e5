"""The reward-model metrics of stage 6 (pure: no torch, so `snakemake -n` stays fast).

Each is one config section eval.<reward>, one per-image rule (eval_reward: one job per image
shard of the benchmark eval.<reward>.benchmark names, both variants) and one result file
results/{model}/<reward>.json (eval_metric), base vs AGFSync with a paired bootstrap CI:

  pickscore    PickScore (Kirstain et al. 2023; yuvalkirstain/PickScore_v1, a CLIP-H fine-tuned on
               Pick-a-Pic, with the processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K):
               logit_scale.exp() * cos(image, prompt), as its model card computes it
  imagereward  ImageReward (Xu et al. 2023; THUDM/ImageReward, ImageReward.pt): BLIP + MLP head,
               normalised by the released mean and std (agfsync.models.imagereward)
  hpsv21       HPS v2.1 (HPS_v2.1_compressed.pt) next to eval.hpsv2's v2.0: the same model and
               protocol (agfsync.models.hps); on the HPS v2 benchmark the same chunked aggregation
  vqascore     VQAScore (Lin et al. 2024): P("Yes" | image, 'Does this figure show "{prompt}"?
               Please answer yes or no.'), from a local VLM (backend: local) or any
               OpenAI-compatible vision endpoint that returns log-probabilities (backend:
               endpoint, through the LLM stage's client, cache, budget and retries)

Per-image rows: {"prompt_id", "group", "seed", "reward"} (results/{model}/eval/{variant}/
{bench}/<reward>-{shard}.jsonl, agfsync.core.layout.REWARD_PER_IMAGE).
"""

from __future__ import annotations

import os

REWARDS = ("pickscore", "imagereward", "hpsv21", "vqascore")
# VQAScore's question and answer (t2v_metrics' defaults), shared by the local model and the endpoint
VQASCORE_QUESTION = 'Does this figure show "{prompt}"? Please answer yes or no.'
VQASCORE_ANSWER = "Yes"
NAMES = {"pickscore": "PickScore", "imagereward": "ImageReward", "hpsv21": "HPS v2.1", "vqascore": "VQAScore"}
# What each reward's value is, for result files and the report.
UNITS = {"pickscore": "logit_scale * cos (about 0..30)", "imagereward": "normalised reward (z-score of ImageReward's data)",
         "hpsv21": "100 * cos", "vqascore": "P(answer) in 0..1"}
# The config keys of each section whose values name weights to download (hub ids or files).
WEIGHT_KEYS = {"pickscore": ("model", "processor"), "imagereward": ("checkpoint", "med_config", "tokenizer"),
               "hpsv21": ("checkpoint",), "vqascore": ("model",)}
HPS21_CHECKPOINT = "HPS_v2.1_compressed.pt"
HPS20_CHECKPOINT = "HPS_v2_compressed.pt"
# The released HPS checkpoints' file names and the version each is (eval.hpsv2.version)
HPS_CHECKPOINTS = {HPS20_CHECKPOINT: "v2.0", HPS21_CHECKPOINT: "v2.1"}


def enabled_rewards(cfg: dict) -> list[str]:
    """The reward metrics the config evaluates, in REWARDS order."""
    evaluation = cfg.get("eval", {})
    return [name for name in REWARDS if evaluation.get(name, {}).get("enabled")]


def reward_bench(cfg: dict, reward: str) -> str:
    """The benchmark whose images the reward scores."""
    return cfg["eval"][reward]["benchmark"]


def uses_endpoint(cfg: dict, reward: str) -> bool:
    return reward == "vqascore" and cfg["eval"][reward].get("backend") == "endpoint"


def reward_values(cfg: dict, reward: str) -> list:
    """Config values behind the weights a job of this reward loads (for its downloads)."""
    if uses_endpoint(cfg, reward):
        return []
    section = cfg["eval"][reward]
    return [section[key] for key in WEIGHT_KEYS[reward] if section.get(key)]


def reward_errors(cfg: dict) -> list[str]:
    """Checks of the reward sections (and of eval.hpsv2's checkpoint version) that a JSON schema
    cannot express (agfsync.core.config)."""
    errors = []
    evaluation = cfg.get("eval", {})
    for reward in enabled_rewards(cfg):
        section = evaluation[reward]
        bench = section.get("benchmark")
        if not evaluation.get(bench, {}).get("enabled"):
            errors.append(f"key 'eval.{reward}.benchmark': {NAMES[reward]} scores the images of {bench!r}, which is "
                          f"not enabled (eval.{bench}.enabled)")
    hpsv2 = evaluation.get("hpsv2", {})
    released = HPS_CHECKPOINTS.get(os.path.basename(str(hpsv2.get("checkpoint") or "")))
    if hpsv2.get("enabled") and released and released != hpsv2.get("version"):
        errors.append(f"key 'eval.hpsv2.checkpoint': {os.path.basename(hpsv2['checkpoint'])} is HPS {released}, but "
                      f"eval.hpsv2.version is {hpsv2.get('version')!r}: their scores are on different scales; "
                      "set the version the checkpoint is")
    hps21 = evaluation.get("hpsv21", {})
    name = os.path.basename(str(hps21.get("checkpoint") or ""))
    if hps21.get("enabled") and name == HPS20_CHECKPOINT:
        errors.append(f"key 'eval.hpsv21.checkpoint': {name} is HPS v2.0 (eval.hpsv2 scores it); HPS v2.1 is "
                      f"{HPS21_CHECKPOINT}")
    vqascore = evaluation.get("vqascore", {})
    if vqascore.get("enabled") and vqascore.get("backend") == "endpoint" and "llm" not in vqascore:
        errors.append("key 'eval.vqascore.llm': backend 'endpoint' needs an llm section (an OpenAI-compatible "
                      "vision endpoint that returns log-probabilities)")
    if vqascore.get("enabled") and "{prompt}" not in str(vqascore.get("question", "{prompt}")):
        errors.append(f"key 'eval.vqascore.question': must contain {{prompt}}, got {vqascore.get('question')!r}")
    return errors
