"""Throughputs behind `agfsync plan` (agfsync.core.plan): per GPU type, images/s of generation,
images/s of each scorer and pairs/s of Diffusion-DPO. Pure (no torch).

Measured where the repository has a measurement: bench/measurements/gpu_<gpu>.json, the
committed output of bench/gpu.sh (bench/README.md, step 3), read when it exists: generation
images/s of SD 1.5 and SDXL (used when the config's steps and resolution are the measured
ones), DPO seconds per pair on one GPU (the run with the config's train.kernels), BLIP-2
fast-path questions/s. Only the H200 has one (gpu_h200.json, 2026-11-30); everything else,
and every GPU type without a file, is derived:

    items/s per GPU = peak dense BF16 TFLOP/s of the GPU x efficiency / TFLOP per item

with the GPU's datasheet peak (GPUS), an assumed efficiency (EFFICIENCY, the fraction of peak a
job sustains; not measured) and the FLOPs of one item: the UNet and VAE counts of the real
architectures measured with torch.utils.flop_counter (docs/method.md, "Throughput ceiling";
tests/test_bench_gpu.py), scaled by latent area for other resolutions; for transformers
2 x parameters x tokens (attention's quadratic term left out). FLOP-bound: PNG decoding, data
loading and communication are not modelled, so derived times are lower bounds, most of all
for the cheap scorers. Every rate carries its provenance string.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MEASUREMENTS = REPO / "bench" / "measurements"
EFFICIENCY = 0.35  # assumed fraction of the dense BF16 peak a GPU job sustains (model FLOP utilisation)

# Dense (no sparsity) BF16 tensor-core peak, TFLOP/s, from the vendors' datasheets.
GPUS: dict[str, tuple[float, str]] = {
    "H100": (989.4, "NVIDIA H100 SXM5 datasheet"),
    "H100-PCIE": (756.0, "NVIDIA H100 PCIe datasheet"),
    "H200": (989.4, "NVIDIA H200 SXM datasheet (the H100's compute)"),
    "A100": (312.0, "NVIDIA A100 datasheet"),
    "L40S": (362.05, "NVIDIA L40S datasheet"),
    "L4": (121.0, "NVIDIA L4 datasheet"),
    "B200": (2250.0, "NVIDIA HGX B200 datasheet (sparse 4.5 PFLOP/s halved)"),
}

# The real architectures (docs/method.md, "Architectures" and "Throughput ceiling").
UNET_PARAMS = {"sd1": 859_520_964, "sdxl": 2_567_463_684}
REF_LATENT = {"sd1": 64, "sdxl": 128}  # latent side at which the FLOPs below were counted (512, 1024 px)
UNET_TFLOP = {"sd1": 0.8033, "sdxl": 6.7612}  # one UNet forward of one latent
VAE_DECODE_TFLOP = {"sd1": 2.5145, "sdxl": 10.4704}
FLOP_SOURCE = "FLOPs counted by torch.utils.flop_counter on the real architecture, tests/test_bench_gpu.py"
TEXT_DIM = {"sd1": 768, "sdxl": 2048}  # prompt embedding width (SDXL: both encoders)
POOLED_DIM = {"sd1": 0, "sdxl": 1280}

# Derived TFLOP counts of the scorers (2 x parameters x tokens per forward).
TF_BLIP2_VISION = 0.53  # EVA ViT-g/14 (0.985B, 257 tokens at 224 px) and the Q-Former
TF_T5_ENC_TOKEN = 2 * 4.63e9 / 1e12  # flan-t5-xxl encoder, 4.63B parameters
TF_T5_DEC_TOKEN = 2 * 6.37e9 / 1e12  # flan-t5-xxl decoder (cross-attention) and LM head, 6.37B
VQA_TOKENS = 32 + 16  # query tokens + "Question: ... Answer:"
TF_CLIP_B16 = 2 * 86e6 * 197 / 1e12 + 2 * 63e6 * 77 / 1e12  # image and text tower
TF_CLIP_L14_IMAGE = 2 * 304e6 * 257 / 1e12  # the aesthetic predictor's backbone
TF_CLIP_H14 = 2 * 632e6 * 257 / 1e12 + 2 * 354e6 * 77 / 1e12  # HPS v2/v2.1, PickScore
TF_IMAGEREWARD = 2 * 304e6 * 197 / 1e12 + 2 * 110e6 * 35 / 1e12  # BLIP ViT-L/16 + BERT-base
TF_INCEPTION = 2 * 5.71e9 / 1e12  # InceptionV3 at 299 px (torchvision: 5.71 G multiply-adds)
TF_TEXT_ENCODERS = {"sd1": 2 * 123e6 * 77 / 1e12, "sdxl": 2 * (123e6 + 695e6) * 77 / 1e12}
DERIVED = "2 x parameters x tokens"


def gpu_peak(gpu: str) -> tuple[str, float, str]:
    """(canonical name, dense BF16 TFLOP/s, source); ValueError listing the known types."""
    for name, (peak, source) in GPUS.items():
        if name.lower() == gpu.strip().lower():
            return name, peak, source
    raise ValueError(f"unknown GPU type {gpu!r}; known: {', '.join(GPUS)} (agfsync.core.plan_table.GPUS)")


def vqa_question_tflop(method: str) -> float:
    """One (image, question) row of stage 3's VQA score: the T5 encoder over the query tokens
    and the question, then one decoder step (fast) or ~5 greedy steps (authors: assumed)."""
    return VQA_TOKENS * TF_T5_ENC_TOKEN + (1 if method == "fast" else 5) * TF_T5_DEC_TOKEN


def tifa_question_tflop(answering: str) -> float:
    """One TIFA question: ours (choices: encoder + ~4 teacher-forced choice tokens) and, with
    `tifa`, also tifascore's free-form answer (a 62-token prompt, beam 5 x ~4 steps: assumed)."""
    ours = VQA_TOKENS * TF_T5_ENC_TOKEN + 4 * TF_T5_DEC_TOKEN
    return ours + (62 * TF_T5_ENC_TOKEN + 20 * TF_T5_DEC_TOKEN if answering == "tifa" else 0.0)


def scorer_tflop(name: str, cfg: dict, questions: float = 0.0) -> tuple[float, str]:
    """(TFLOP per image, formula) of a scorer: stage3 (VQA + CLIP + aesthetic), tifa (stage 3
    and TIFA's answering), hpsv2, hpsv21, pickscore, imagereward, vqascore, mjhq (FID features)."""
    method = cfg["scores"]["vqa"]["method"]
    stage3 = TF_BLIP2_VISION + questions * vqa_question_tflop(method) + TF_CLIP_B16 + TF_CLIP_L14_IMAGE
    if name == "stage3":
        return stage3, f"BLIP-2 vision {TF_BLIP2_VISION} + {questions:g} questions x {vqa_question_tflop(method):.3f} " \
                       f"+ CLIP B/16 {TF_CLIP_B16:.3f} + CLIP L/14 {TF_CLIP_L14_IMAGE:.3f} TFLOP ({DERIVED})"
    if name == "tifa":
        per_q = tifa_question_tflop(cfg["eval"]["tifa"].get("answering", "tifa"))
        return stage3 + questions * per_q, f"stage 3 + {questions:g} TIFA questions x {per_q:.3f} TFLOP ({DERIVED})"
    if name == "vqascore":
        tf = TF_BLIP2_VISION + 72 * TF_T5_ENC_TOKEN + TF_T5_DEC_TOKEN
        return tf, f"BLIP-2 vision + 72 encoder tokens + 1 decoder step ({DERIVED})"
    fixed = {"hpsv2": (TF_CLIP_H14, "CLIP ViT-H/14"), "hpsv21": (TF_CLIP_H14, "CLIP ViT-H/14"),
             "pickscore": (TF_CLIP_H14, "CLIP ViT-H/14"), "imagereward": (TF_IMAGEREWARD, "BLIP ViT-L/16 + BERT"),
             "mjhq": (TF_INCEPTION, "InceptionV3")}
    tf, what = fixed[name]
    basis = "2 x torchvision's 5.71 G multiply-adds at 299 px" if name == "mjhq" else DERIVED
    return tf, f"{what} {tf:.3f} TFLOP ({basis})"


def generation_tflop(family: str, resolution: int, steps: int, guidance: float, scale: float = 1.0) -> tuple[float, str]:
    """(TFLOP per image, formula): steps x (2 with CFG) UNet forwards + one VAE decode.
    scale: the UNet's parameter count relative to the family's (local models of another size)."""
    area = (resolution / 8 / REF_LATENT[family]) ** 2
    cfg_factor = 2 if guidance > 1 else 1
    unet, vae = UNET_TFLOP[family] * area * scale, VAE_DECODE_TFLOP[family] * area
    note = "" if area == 1 else f", scaled by latent area x{area:.3g} from {REF_LATENT[family] * 8} px"
    note += "" if scale == 1 else f", by parameters x{scale:.3g}"
    return steps * cfg_factor * unet + vae, \
        f"{steps} steps x {cfg_factor} x {unet:.4g} TFLOP UNet + {vae:.4g} TFLOP VAE decode ({FLOP_SOURCE}{note})"


def dpo_pair_tflop(family: str, resolution: int, checkpointing: bool, scale: float = 1.0) -> tuple[float, str]:
    """(TFLOP per pair, formula): policy forward + backward (2 x) on winner and loser, the
    reference forward on both (8 forward-equivalents, docs/method.md), + 2 recomputed forwards
    with gradient checkpointing."""
    passes = 8 + (2 if checkpointing else 0)
    unet = UNET_TFLOP[family] * (resolution / 8 / REF_LATENT[family]) ** 2 * scale
    return passes * unet, f"{passes} UNet forward-equivalents x {unet:.4g} TFLOP ({FLOP_SOURCE})"


def derived_rate(tflop: float, peak: float, efficiency: float, formula: str, unit: str) -> dict:
    value = peak * efficiency / tflop if tflop > 0 else float("inf")
    return {"value": value, "unit": unit, "tflop_per_item": tflop,
            "provenance": f"derived: {peak:g} TFLOP/s x efficiency {efficiency:g} / {tflop:.4g} TFLOP per item; "
                          f"{formula}"}


def measured(gpu: str, directory: str | Path = MEASUREMENTS) -> dict:
    """What bench/measurements/gpu_<gpu>.json (bench/gpu.sh's gpu.json, committed) measured:
    {"generation": {family: {...}}, "dpo": {family: seconds_per_pair}, "vqa_questions_per_s",
    "file", "date"}; {} when there is no such file (or only a smoke run)."""
    path = Path(directory) / f"gpu_{gpu.lower().replace('-', '_')}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("smoke"):
        return {}
    steps = data.get("steps", {})
    family = {"sd15": "sd1", "sdxl": "sdxl"}
    out = {"file": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
           "date": data.get("date", "undated"), "generation": {}, "dpo": {}}
    for arch, row in (steps.get("generation", {}).get("generation") or {}).items():
        if arch in family and row.get("images_per_s"):
            out["generation"][family[arch]] = row
    for run in steps.get("dpo", {}).get("runs") or []:
        if run.get("arch") in family and run.get("seconds_per_pair") and run.get("kernels") in ("triton", "torch"):
            out["dpo"].setdefault(family[run["arch"]], {})[run["kernels"]] = run
    if steps.get("vqa", {}).get("fast_questions_per_s"):
        out["vqa_questions_per_s"] = steps["vqa"]["fast_questions_per_s"]
    return out


def generation_rate(model: dict, peak: float, efficiency: float, found: dict, scale: float = 1.0) -> dict:
    """images/s per GPU of one model's sampler (one image = one candidate or evaluation image)."""
    gen, family, res = model["generation"], model["family"], model["resolution"]
    row = found.get("generation", {}).get(family)
    if row and scale == 1 and row.get("steps") == gen["steps"] and row.get("resolution") == res:
        return {"value": row["images_per_s"], "unit": "images/s",
                "provenance": f"measured: {found['file']} {found['date']} ({row.get('candidates_per_batch', '?')} "
                              f"candidates per batch, {row['steps']} steps, {res} px)"}
    tf, formula = generation_tflop(family, res, gen["steps"], gen["guidance_scale"], scale)
    return derived_rate(tf, peak, efficiency, formula, "images/s")


def dpo_rate(model: dict, train: dict, peak: float, efficiency: float, found: dict, scale: float = 1.0) -> dict:
    """pairs/s per GPU of Diffusion-DPO (train: the model's train section)."""
    family, res = model["family"], model["resolution"]
    runs = found.get("dpo", {}).get(family, {})  # by train.kernels as it ran: auto runs torch (kernels/runtime.py)
    run = runs.get("triton" if train.get("kernels") == "triton" else "torch") or next(iter(runs.values()), None)
    if run and scale == 1 and run.get("resolution") == res:
        return {"value": 1 / run["seconds_per_pair"], "unit": "pairs/s",
                "provenance": f"measured: {found['file']} {found['date']} (one GPU, micro-batch 1, kernels "
                              f"{run['kernels']})"}
    tf, formula = dpo_pair_tflop(family, res, train["gradient_checkpointing"], scale)
    return derived_rate(tf, peak, efficiency, formula, "pairs/s")


def scorer_rate(name: str, cfg: dict, peak: float, efficiency: float, found: dict, questions: float = 0.0) -> dict:
    """images/s per GPU of a scorer (scorer_tflop's names); stage 3 uses the measured BLIP-2
    questions/s when there is one."""
    tf, formula = scorer_tflop(name, cfg, questions)
    rate = derived_rate(tf, peak, efficiency, formula, "images/s")
    qps = found.get("vqa_questions_per_s")
    if name == "stage3" and qps and questions and cfg["scores"]["vqa"]["method"] == "fast":
        rest = TF_CLIP_B16 + TF_CLIP_L14_IMAGE
        seconds = questions / qps + rest / (peak * efficiency)
        rate = {"value": 1 / seconds, "unit": "images/s", "tflop_per_item": tf,
                "provenance": f"measured VQA: {found['file']} {found['date']} ({qps} questions/s, BLIP-2 fast path); "
                              f"CLIP and aesthetic derived ({DERIVED}, efficiency {efficiency:g})"}
    return rate
