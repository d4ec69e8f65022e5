"""Disk per output folder for `agfsync plan` (agfsync.core.plan): bytes of what each stage
writes, from the config's counts and resolutions and the byte assumptions of
agfsync.core.plan_sizes (each folder states its basis). Pure (no torch)."""

from __future__ import annotations

from agfsync.core import plan_sizes as S, plan_table as T
from agfsync.core.benchmarks import VARIANTS

OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw8bit": 2}  # per trained parameter: two moments, fp32 or 8-bit


def png_bytes(resolution: int) -> float:
    """One square RGB PNG in a shard tar (PNG_BYTES_PER_PIXEL, plus the tar member's header)."""
    return resolution * resolution * S.PNG_BYTES_PER_PIXEL + S.TAR_MEMBER_BYTES


def latent_bytes(resolution: int) -> int:
    """One fp16 final latent (4 x H/8 x W/8) saved as .npy in a shard tar."""
    return 4 * (resolution // 8) ** 2 * 2 + S.NPY_HEADER_BYTES + S.TAR_MEMBER_BYTES


def checkpoint_bytes_per_param(train: dict) -> int:
    """Bytes per UNet parameter of one DeepSpeed checkpoint with its optimizer state."""
    if train.get("lora_rank"):
        return 4  # the module weights; the adapters' optimizer state is small and not counted
    master = 4 if train["zero_stage"] >= 1 else 0
    return 4 + master + OPTIMIZER_STATE_BYTES[train["optimizer"]]


def train_cache_pair_bytes(family: str, resolution: int, text_dim: int) -> int:
    """One cached pair: winner and loser latents, the prompt embeddings (fp16), SDXL's pooled
    embedding (fp16) and time ids (6 x fp32)."""
    latents = 2 * 4 * (resolution // 8) ** 2 * 2
    extra = T.POOLED_DIM[family] * 2 + 6 * 4 if family == "sdxl" else 0
    return latents + S.TEXT_TOKENS * text_dim * 2 + extra


def llm_cache_bytes(llm: list[dict]) -> float:
    """resources/llm_cache: one line per answered request (first asks)."""
    return sum(x["requests"] * (S.CACHE_ENTRY_BYTES + x["tokens_out"] / max(1, x["requests"]) * S.CHARS_PER_TOKEN)
               for x in llm)


def disk(cfg: dict, models: dict, trains: dict, prompts: int, questions: float, benches: dict, rewards: list,
         traj_images: dict, scale: dict, text_dim: dict, downloads: dict, llm_cache: float,
         prompt_chars: float, makes: dict | None = None) -> list[dict]:
    """[{folder, bytes, basis, per_model}] in workflow order; per_model: {model: bytes} where the
    folder is per model. Counts as agfsync.core.plan.plan's (upper bounds). makes: per stage of
    agfsync.core.sharing.CHAIN, and per ("eval", bench), the models that write their own (the
    others read an earlier model's: 0 bytes); None: every model."""
    everyone = set(models)

    def own(stage, m):
        return m in (everyone if makes is None else makes.get(stage, everyone))

    n = cfg["candidates"]["num_per_prompt"]
    keep = cfg["candidates"]["keep_latents"]
    tifa_q = S.TIFA_QUESTIONS_PER_PROMPT
    rows = []

    def add(folder, stage, basis, per_model=None, total=None):
        per_model = {m: round(b) for m, b in (per_model or {}).items()}
        rows.append({"folder": folder, "stage": stage, "basis": basis, "per_model": per_model or None,
                     "bytes": round(total if total is not None else sum(per_model.values()))})

    add("results/prompts", "qa", "prompts.jsonl and qa.jsonl: a row and the prompt per prompt, QA records",
        total=prompts * (2 * (S.PROMPT_ROW_BYTES + prompt_chars) + questions * S.QA_PAIR_CHARS[cfg["qa"]["mode"]]))
    images = prompts * n
    add("results/{model}/candidates (PNG)", "candidates_generate",
        f"{images:,} images per model x (resolution^2 x {S.PNG_BYTES_PER_PIXEL} B + tar header + manifest row)",
        {m: own("candidates", m) * images * (png_bytes(models[m]["resolution"]) + S.MANIFEST_ROW_BYTES) for m in models})
    if keep:
        add("results/{model}/candidates (latents)", "candidates_generate",
            "fp16 4 x H/8 x W/8 per image (.npy in the same tars)",
            {m: own("candidates", m) * images * latent_bytes(models[m]["resolution"]) for m in models})
    add("results/{model}/scores", "candidates_score", f"a JSONL row per image with {questions:g} per-question results",
        {m: own("scores", m) * images * (S.SCORE_ROW_BYTES + questions * S.SCORE_QUESTION_BYTES) for m in models})
    add("results/{model}/pairs.jsonl", "pairs_select", f"a row per pair (at most one per prompt), {S.PAIR_ROW_BYTES} B",
        {m: own("pairs", m) * prompts * S.PAIR_ROW_BYTES for m in models})
    add("results/{model}/train_cache", "train_cache",
        "per pair: 2 fp16 latents, 77 x text-width fp16 embeddings (+ SDXL pooled)",
        {m: own("train_cache", m) * prompts * train_cache_pair_bytes(models[m]["family"], models[m]["resolution"],
                                                                     text_dim[m]) for m in models})
    params = {m: T.UNET_PARAMS[models[m]["family"]] * scale[m] for m in models}
    kept = {m: t["keep_checkpoints"] * checkpoint_bytes_per_param(t) for m, t in trains.items()}
    add("results/{model}/train_checkpoints", "train_dpo", "; ".join(sorted({
        f"{t['keep_checkpoints']} checkpoints x UNet parameters x {checkpoint_bytes_per_param(t)} B ({t['optimizer']}, "
        f"ZeRO stage {t['zero_stage']}{', LoRA' if t.get('lora_rank') else ''})" for t in trains.values()})),
        {m: params[m] * kept[m] for m in models})
    snapshots = {m: len(t.get("snapshots") or ()) for m, t in trains.items()}
    add("results/{model}/agfsync", "train_dpo", "the fine-tuned UNet in fp32 and fp16 (6 B per parameter)"
        + (", train.snapshots in fp32 (4 B each)" if any(snapshots.values()) else ""),
        {m: params[m] * (6 + 4 * snapshots[m]) for m in models})
    per_image_extra = {"tifa": S.EVAL_ROW_BYTES + tifa_q * S.EVAL_QUESTION_BYTES, "hpsv2": S.EVAL_ROW_BYTES,
                       "mjhq": S.FID_FEATURE_BYTES}
    reward_rows = sum(benches[cfg["eval"][r]["benchmark"]] for r in rewards) * S.EVAL_ROW_BYTES
    add("results/{model}/eval", "eval_generate",
        f"up to {sum(benches.values()) * len(VARIANTS):,} images per model (PNG as the candidates) "
        "with their scores or FID features, and the reward rows (base images: once per base model)",
        {m: sum((1 + own(("eval", b), m)) * c * (png_bytes(models[m]["resolution"]) + S.MANIFEST_ROW_BYTES
                                                  + per_image_extra[b]) for b, c in benches.items())
         + len(VARIANTS) * reward_rows for m in models})
    if any(traj_images.values()):
        add("results/{model}/trajectory.json.work", "eval_trajectory", "an image per trajectory prompt and point "
            "(base, snapshots, final)", {m: traj_images[m] * png_bytes(models[m]["resolution"]) for m in models})
    if "mjhq" in benches:
        add("results/eval", "eval_score", f"MJHQ-30K reference FID features ({benches['mjhq']:,} x 2048 float32)",
            total=benches["mjhq"] * S.FID_FEATURE_BYTES)
    add("resources/llm_cache", "qa", "an answer per LLM request (first asks)", total=llm_cache)
    hub = sum(r["bytes"] or 0 for r in downloads["rows"] if r["kind"] == "hub")
    files = sum(r["bytes"] or 0 for r in downloads["rows"] if r["kind"] == "file")
    if hub:
        add("Hugging Face cache (hub models)", "downloads", "the hub repositories (see downloads)", total=hub)
    if files:
        add("resources/benchmarks, resources/weights", "downloads", "downloads.files (see downloads)", total=files)
    return rows
