"""Sizes and prices behind `agfsync plan` (agfsync.core.plan): what the downloads weigh, what
the LLM endpoints charge, how long the LLM stages' requests are, and the per-record byte
assumptions of the outputs. Pure data (no torch); every number carries where it comes from.

Download sizes are what the download rules fetch: for files, the file; for a hub repository,
every file of it that `downloads.hub_ignore` (config/config.yaml) lets through, which for
several repositories includes duplicate `.bin` weights, OpenVINO copies and single-file
checkpoints that no job loads (see docs of each entry). Sizes are as the Hugging Face hub
lists them (3 significant digits) unless an entry says otherwise; `bound: "lower"` means some
files pass the filter whose size is not known here; None means unknown.
"""

from __future__ import annotations

import math

GB, MB = 1e9, 1e6

# --------------------------------------------------------------------------- hub repositories
# repo -> (bytes, bound, what passes hub_ignore and its sizes, source)
_LISTING = "huggingface.co/{repo}/tree/main, file sizes as the hub lists them"
HUB_SIZES: dict[str, tuple[float | None, str, str, str]] = {
    "CompVis/stable-diffusion-v1-4": (
        10.97 * GB, "approx",
        "unet 3.44 GB, text_encoder 0.492 GB, vae 0.335 GB, safety_checker 1.22 GB, each as .bin and .safetensors "
        "(fp32); *fp16*, *non_ema*, *.msgpack ignored. Used: unet, vae, text_encoder safetensors (4.27 GB)",
        "component sizes of the SD 1.x diffusers layout as listed for runwayml/stable-diffusion-v1-5 "
        "(same architecture); this repository's own listing not checked"),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": (
        22.94 * GB, "approx",
        "as SD v1.4 (10.97 GB) plus the root single-file checkpoints v1-5-pruned-emaonly.safetensors 4.27 GB and "
        "v1-5-pruned.safetensors 7.7 GB (the .ckpt copies are ignored). Used: 4.27 GB",
        "listing of runwayml/stable-diffusion-v1-5, which this repository mirrors"),
    "stabilityai/stable-diffusion-xl-base-1.0": (
        42.08 * GB, "approx",
        "unet safetensors 10.3 GB + openvino_model.bin 10.3 GB; text_encoder_2 2.78 GB + OpenVINO 2.78 GB; "
        "text_encoder 0.492 GB + OpenVINO 0.492 GB (assumed as text_encoder_2's layout); vae and vae_1_0 0.335 GB "
        "each; vae_decoder/vae_encoder OpenVINO 0.198 + 0.137 GB; root sd_xl_base_1.0.safetensors and "
        "sd_xl_base_1.0_0.9vae.safetensors 6.94 GB each, offset LoRA 49.6 MB. *.onnx_data, *fp16*, *.msgpack "
        "ignored. Used: unet, vae, both text encoders in fp32 (13.9 GB)", _LISTING),
    "Salesforce/blip2-flan-t5-xxl": (
        98.9 * GB, "approx",
        "the fp32 weights twice: model-*.safetensors (~49.5 GB) and pytorch_model-0000N-of-00006.bin (9.37, 9.87, "
        "9.99, 10.0, 9.7, 0.526 GB); both pass hub_ignore. Used: the safetensors (~49.5 GB)",
        _LISTING + " (the shards of both formats)"),
    "openai/clip-vit-base-patch16": (
        1.2 * GB, "approx", "pytorch_model.bin and model.safetensors, 599 MB each (tf_model.h5, flax ignored)",
        "599 MB per copy as listed for mirrors of the repository"),
    "openai/clip-vit-large-patch14": (
        3.42 * GB, "approx", "pytorch_model.bin and model.safetensors, 1.71 GB each (tf_model.h5, flax ignored)",
        _LISTING + " (mirror of the repository)"),
    "BAAI/bge-large-en-v1.5": (
        2.68 * GB, "lower", "model.safetensors and pytorch_model.bin 1.34 GB each; onnx/ ignored; openvino/ passes "
        "hub_ignore, its size not known here", _LISTING),
    "sentence-transformers/all-mpnet-base-v2": (
        0.876 * GB, "lower", "model.safetensors and pytorch_model.bin, 438 MB each (109.5M parameters x 4 B); onnx/ "
        "ignored; openvino/ passes hub_ignore, its size not known here", "derived from the parameter count"),
    "yuvalkirstain/PickScore_v1": (
        7.88 * GB, "approx", "model.safetensors and pytorch_model.bin, 3.94 GB each", _LISTING),
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": (
        7.88 * GB, "lower", "open_clip_pytorch_model.bin and pytorch_model.bin, 3.94 GB each; safetensors copies "
        "may also exist (not checked). Only its processor (tokenizer, preprocessing) is used",
        "listing of the mirror hoaiht/CLIP-ViT-H-14-laion2B-s32B-b79K"),
    "google-bert/bert-base-uncased": (
        0.88 * GB, "lower", "model.safetensors and pytorch_model.bin, 440 MB each (110M parameters x 4 B); coreml/ "
        "passes hub_ignore, its size not known here. Only its tokenizer is used", "derived from the parameter count"),
}

# --------------------------------------------------------------------------- downloads.files, by file name
FILE_SIZES: dict[str, tuple[float | None, str]] = {
    "HPS_v2_compressed.pt": (1_972_484_501, "git-lfs pointer of xswu/HPSv2 (commit 697403c)"),
    "HPS_v2.1_compressed.pt": (1_972_490_005, "git-lfs pointer of xswu/HPSv2 (commit 697403c)"),
    "ImageReward.pt": (1.79 * GB, "huggingface.co/THUDM/ImageReward listing"),
    "med_config.json": (485, "huggingface.co/THUDM/ImageReward listing"),
    "meta_data.json": (8.82 * MB, "huggingface.co/datasets/playgroundai/MJHQ-30K listing"),
    "mjhq30k_imgs.zip": (3.6 * GB, "huggingface.co/datasets/playgroundai/MJHQ-30K listing (3.6 GB, not ~9 GB)"),
    "weights-inception-2015-12-05-6726825d.pth": (
        95.6 * MB, "derived: InceptionV3 for FID, ~23.9M parameters x 4 B (file not checked)"),
    "sac+logos+ava1-l14-linearMSE.pth": (
        3.71 * MB, "derived: MLP 768-1024-128-64-16-1, 927,969 parameters x 4 B (file not checked)"),
}
SMALL_FILE_NOTE = "unknown (a JSON prompt or question list: small next to the weights)"

# --------------------------------------------------------------------------- LLM prices
# USD per 1M tokens (input, output), list prices of the providers' pricing pages as of 2025-06
# (openai.com/api/pricing, ai.google.dev/gemini-api/docs/pricing), standard tier, no batch
# discount; not re-checked since. Override with `agfsync plan --price-in/--price-out`.
PRICES_DATE = "2025-06"
PRICES: dict[str, tuple[float, float]] = {
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gemini-2.0-flash": (0.10, 0.40),
}
FREE_PROVIDERS = ("file", "world")  # recorded answers, the local world writer: no endpoint is paid

# --------------------------------------------------------------------------- LLM request lengths
# Characters of the stages' requests, tested equal to what agfsync.stages.prompts / qa /
# judge build (tests/test_plan.py): prompts = PROMPTS_FIXED_CHARS + 2 x len(category name) +
# len(focus) + the examples block + the digits of the count; QA = QA_FIXED_CHARS[mode] + the
# prompt; judge = JUDGE_FIXED_CHARS + the prompt, plus two images.
PROMPTS_FIXED_CHARS = 841
QA_FIXED_CHARS = {"yes_no": 2113, "multiple_choice": 2182}
QA_PAIR_CHARS = {"yes_no": 126, "multiple_choice": 151}  # mean JSON record of the stage's worked example
QA_EXAMPLE_PAIRS = {"yes_no": 9, "multiple_choice": 7}  # pairs in the stage's worked example
JUDGE_FIXED_CHARS = 459
JUDGE_OUT_TOKENS = 60  # {"winner": ..., "reason": "<one sentence>"}: assumed
VQASCORE_QUESTION_CHARS = 80  # the question template around the prompt: assumed
CHARS_PER_TOKEN = 4.0  # OpenAI's rule of thumb for English text, used for JSON too
BENCH_PROMPT_CHARS = 150  # a benchmark prompt shown to the judge: assumed
# Image tokens of a vision request: OpenAI's published formula for gpt-4o at high detail
# (fit in 2048 px, shortest side down to 768 px, 85 + 170 per 512-px tile).
IMAGE_BASE_TOKENS, IMAGE_TILE_TOKENS = 85, 170
# Wall time of one remote request: assumed, not measured (rate limits not modelled).
LLM_LATENCY_S, LLM_OUT_TOKENS_PER_S = 1.0, 60.0

# --------------------------------------------------------------------------- output records
PNG_BYTES_PER_PIXEL = 1.5  # lossless PNG (level 1) of 8-bit RGB photographic images: ~half of raw; assumed, not measured
TAR_MEMBER_BYTES = 768  # a tar member's 512-byte header plus on average half a 512-byte block of padding
NPY_HEADER_BYTES = 128
MANIFEST_ROW_BYTES = 400  # one shard manifest row (ids, seeds, sampler settings): assumed
SCORE_ROW_BYTES, SCORE_QUESTION_BYTES = 250, 6  # a scores JSONL row and each per-question boolean: assumed
PAIR_ROW_BYTES = 1200  # a pairs.jsonl row (winner and loser with every score): assumed
PROMPT_ROW_BYTES = 150  # a prompts.jsonl row besides the prompt text: assumed
EVAL_ROW_BYTES, EVAL_QUESTION_BYTES = 300, 60  # per-image evaluation scores, and per TIFA question: assumed
FID_FEATURE_BYTES = 2048 * 4  # InceptionV3 pool3 features, float32
CACHE_ENTRY_BYTES = 400  # an LLM cache line besides the answer text: assumed
TEXT_TOKENS = 77  # CLIP's context: the cached prompt embeddings per pair
TIFA_QUESTIONS_PER_PROMPT = 25_000 / 4_081  # TIFA v1.0: ~25k questions over 4,081 prompts (docs/method.md)


def image_tokens(resolution: int) -> int:
    """Tokens of one square image of `resolution` px at high detail (OpenAI's formula)."""
    side = min(resolution, 2048, 768)
    tiles = math.ceil(side / 512) ** 2
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * tiles


def hub_size(repo: str) -> dict:
    """{bytes, bound, files, source} of a hub repository (bytes None: unknown)."""
    if repo not in HUB_SIZES:
        return {"bytes": None, "bound": "unknown", "files": "not in agfsync.core.plan_sizes.HUB_SIZES",
                "source": "unknown"}
    size, bound, files, source = HUB_SIZES[repo]
    return {"bytes": size, "bound": bound, "files": files, "source": source.format(repo=repo)}


def file_size(path: str) -> dict:
    """{bytes, source} of a downloads.files entry, by its file name (bytes None: unknown)."""
    name = path.rsplit("/", 1)[-1]
    if name in FILE_SIZES:
        size, source = FILE_SIZES[name]
        return {"bytes": size, "source": source}
    return {"bytes": None, "source": SMALL_FILE_NOTE if name.endswith(".json") else "unknown"}


def price(model: str, overrides: dict | None = None) -> tuple[float | None, float | None, str]:
    """(USD per 1M input tokens, per 1M output tokens, where from) for an LLM model name.
    overrides: {model or "*": (in or None, out or None)}; "*" applies to every model."""
    table_in, table_out = PRICES.get(model, (None, None))
    source = f"list price {PRICES_DATE}" if model in PRICES else "unknown price"
    for key in (model, "*"):
        given = (overrides or {}).get(key)
        if given:
            if given[0] is not None:
                table_in, source = given[0], "given"
            if given[1] is not None:
                table_out, source = given[1], "given"
    return table_in, table_out, source
