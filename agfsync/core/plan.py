"""What a run will cost, before it is submitted (`agfsync plan`): per stage the jobs, items
(prompts, images, questions, pairs), GPU-hours on a GPU type and wall time on N GPUs; disk per
output folder; download size; LLM requests, tokens and cost. Pure (no torch): everything comes
from the resolved config (agfsync.core.config.load_config), the DAG helpers the workflow itself
uses (job counts equal `snakemake -n`'s, tests/test_plan.py) and the tables of
agfsync.core.plan_table (throughputs, measured or derived from FLOPs) and
agfsync.core.plan_sizes (download sizes, prices, byte assumptions). Every estimate states its
basis in `assumptions`, every throughput its provenance.

Counts are upper bounds where the run decides: prompts = categories x per_category (what the
prompt stage aims for; QA may drop some), pairs <= prompts (ties and margins drop some).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import mean

from agfsync.core import dag, plan_sizes as S, plan_table as T, sharing
from agfsync.core.benchmarks import VARIANTS, enabled, max_prompts, metrics_for, num_eval_shards
from agfsync.core.categories import CATEGORIES, category
from agfsync.core.downloads import hub_repos, is_hub_id, needed
from agfsync.core.overrides import merged_train
from agfsync.core.plan_disk import disk, llm_cache_bytes
from agfsync.core.rewards import enabled_rewards, reward_bench, reward_values, uses_endpoint
from agfsync.core.shards import num_shards

TIFA_QUESTIONS_PER_PROMPT = S.TIFA_QUESTIONS_PER_PROMPT


class PlanError(ValueError):
    """A plan that cannot be made (an unknown GPU type, a bad GPU count); the message says why."""


# ----------------------------------------------------------------------------- counts


def download_values(cfg: dict) -> list:
    """Config values behind the downloads the DAG's jobs need (as workflow/rules/*.smk ask)."""
    values = [cfg["models"][m]["pretrained"] for m in cfg["run_models"]]
    values += dag.scorer_values(cfg) + dag.dedup_values(cfg) + dag.tifa_answering_values(cfg)
    for bench in enabled(cfg):
        values += dag.benchmark_files(cfg, bench) + dag.eval_score_values(cfg, bench)
    if "mjhq" in enabled(cfg):
        values.append(cfg["eval"]["mjhq"]["images"])
    return values + [v for r in enabled_rewards(cfg) for v in reward_values(cfg, r)]


def downloads(cfg: dict) -> dict:
    """The files and hub repositories the run fetches, with their sizes (plan_sizes)."""
    files = {e["path"]: e for e in cfg.get("downloads", {}).get("files", [])}
    hubs = hub_repos(cfg)
    outputs = needed(download_values(cfg), files, hubs)
    rows = [{"name": p, "kind": "file", **S.file_size(p)} for p in outputs if p in files]
    rows += [{"name": r, "kind": "hub", **S.hub_size(r)} for r in hubs]
    return {"rows": rows, "files": sum(r["kind"] == "file" for r in rows), "hub": len(hubs),
            "bytes": sum(r["bytes"] or 0 for r in rows), "unknown": [r["name"] for r in rows if r["bytes"] is None],
            "lower_bound": any(r.get("bound") in ("lower", "unknown") or r["bytes"] is None for r in rows)}


def rule_jobs(cfg: dict) -> dict[str, int]:
    """Jobs per rule of `rule all`'s DAG (what `snakemake -n --forceall` lists, less `all`)."""
    m, shards, benches = len(cfg["run_models"]), num_shards(cfg), enabled(cfg)

    def made(stage, bench=None, kind=None):  # models that make their own (agfsync.core.sharing)
        return len({sharing.source(cfg, stage, name, bench, kind) for name in cfg["run_models"]})

    eval_shards = {b: num_eval_shards(cfg, b) for b in benches}
    rewards = enabled_rewards(cfg)
    # an evaluation shard: a job per model for AGFSync, per model that makes its own for the base model
    images = sum(n * (m + made("eval", b)) for b, n in eval_shards.items())
    scored = sum(n * (m + made("per_image", b, "per_image")) for b, n in eval_shards.items())
    reward_jobs = {r: eval_shards[reward_bench(cfg, r)] * (m + made("per_image", reward_bench(cfg, r), r))
                   for r in rewards}
    got = downloads(cfg)
    jobs = {"download_file": got["files"], "download_hub": got["hub"],
            "models_tiny": int(bool(cfg["tiny_models"]["enabled"])), "prompts_generate": 1, "qa_generate": 1,
            "candidates_generate": made("candidates") * shards, "candidates_score": made("scores") * shards,
            "pairs_select": made("pairs"), "train_cache": made("train_cache"),
            "train_dpo": m, "eval_prompts": len(benches), "eval_generate": images,
            "eval_score": scored, "eval_reference_mjhq": int("mjhq" in benches),
            "eval_reward": sum(n for r, n in reward_jobs.items() if not uses_endpoint(cfg, r)),
            "eval_reward_endpoint": sum(n for r, n in reward_jobs.items() if uses_endpoint(cfg, r)),
            "eval_trajectory": m * int(dag.trajectory_enabled(cfg)),
            "eval_metric": m * len([x for x in metrics_for(cfg) if x != "judge"]),
            "eval_judge": m * int(bool(cfg["eval"]["judge"]["enabled"])), "report": 1}
    return {rule: n for rule, n in jobs.items() if n}


def qa_pairs_per_prompt(cfg: dict) -> int:
    """Assumed QA pairs per prompt: as many as the QA stage's worked example, within [min, max]."""
    qa = cfg["qa"]
    return min(max(S.QA_EXAMPLE_PAIRS[qa["mode"]], qa["min_pairs"]), qa["max_pairs"])


def local_unet_params(pretrained: str) -> int | None:
    """Parameters of a local diffusers model's UNet, from its safetensors headers (no torch);
    None when there is no such directory."""
    unet = Path(pretrained) / "unet"
    files = sorted(unet.glob("diffusion_pytorch_model*.safetensors")) if unet.is_dir() else []
    files = [f for f in files if "fp16" not in f.name] or files
    total = 0
    for path in files:
        with open(path, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total or None


def local_text_dim(pretrained: str, family: str) -> int:
    """Width of the prompt embeddings of a local model (its text encoders' hidden_size), else the family's."""
    encoders = ("text_encoder", "text_encoder_2") if family == "sdxl" else ("text_encoder",)
    try:
        return sum(json.loads((Path(pretrained) / e / "config.json").read_text())["hidden_size"] for e in encoders)
    except (OSError, ValueError, KeyError, TypeError):
        return T.TEXT_DIM[family]


# ----------------------------------------------------------------------------- the plan


def _stage(name, rules, items, gpus_per_job=0, durations=(), rates=None, note=None):
    """A stage row; durations: (seconds of one job, number of such jobs) per group of jobs."""
    seconds = sum(d * n for d, n in durations)
    return {"stage": name, "rules": rules, "jobs": sum(rules.values()), "items": items, "gpus_per_job": gpus_per_job,
            "job_seconds": seconds, "longest_job_s": max((d for d, n in durations if n), default=0.0),
            "gpu_hours": seconds * gpus_per_job / 3600, "throughputs": rates or {}, "note": note}


def _wall(stage: dict, gpus: int, warnings: list) -> float | None:
    g = stage["gpus_per_job"]
    if not g:
        return stage.get("wall_s")
    if g > gpus:
        warnings.append(f"{stage['stage']}: a job holds {g} GPUs, more than --gpus {gpus}: timed as if it ran")
    parallel = max(1, gpus // g)
    return max(stage["job_seconds"] / parallel, stage["longest_job_s"])


def _llm_stage(name: str, llm: dict, requests: int, tin: float, tout: float, prices, requests_max=None) -> dict:
    free = llm["provider"] in S.FREE_PROVIDERS
    p_in, p_out, source = S.price(llm["model"], prices)
    cost = None if None in (p_in, p_out) else (tin * p_in + tout * p_out) * requests / 1e6
    cost = 0.0 if free else cost
    wall = None if free else math.ceil(requests / max(1, llm.get("concurrency", 1))) * (
        S.LLM_LATENCY_S + tout / S.LLM_OUT_TOKENS_PER_S)
    return {"stage": name, "provider": llm["provider"], "model": llm["model"], "requests": requests,
            "requests_max": requests_max or requests, "tokens_in": round(tin * requests),
            "tokens_out": round(tout * requests),
            "price_in": None if free else p_in, "price_out": None if free else p_out,
            "price_source": "no paid endpoint (provider " + llm["provider"] + ")" if free else source,
            "cost_usd": cost, "wall_s": wall}


def plan(cfg: dict, *, gpu: str = "H100", gpus: int = 8, prices: dict | None = None,
         efficiency: float = T.EFFICIENCY, measurements: str | Path = T.MEASUREMENTS) -> dict:
    """The plan of a resolved config on `gpus` GPUs of type `gpu` (JSON-ready; see the module doc).
    prices: {model or "*": (USD per 1M input tokens or None, per 1M output tokens or None)}."""
    try:
        gpu, peak, peak_source = T.gpu_peak(gpu)
    except ValueError as err:
        raise PlanError(str(err)) from None
    if gpus < 1 or not 0 < efficiency <= 1:
        raise PlanError(f"--gpus must be >= 1 (got {gpus}) and the efficiency in (0, 1] (got {efficiency})")
    found = T.measured(gpu, measurements)
    warnings, rules = [], rule_jobs(cfg)
    job_gpus = dag.job_gpus(cfg)
    models = {name: cfg["models"][name] for name in cfg["run_models"]}
    trains = {name: merged_train(cfg, name) for name in models}  # with each model's overrides
    cats = [category(c) for c in (cfg["prompts"]["categories"] or CATEGORIES)]
    prompts = len(cats) * cfg["prompts"]["per_category"]
    n, q = cfg["candidates"]["num_per_prompt"], qa_pairs_per_prompt(cfg)
    shards = num_shards(cfg)
    benches = {b: max_prompts(cfg, b) for b in enabled(cfg)}
    eval_shards = {b: num_eval_shards(cfg, b) for b in benches}
    rewards = enabled_rewards(cfg)
    on_gpu = job_gpus["candidates_generate"] > 0
    scale, rates, text_dim = {}, {}, {}
    for name, model in models.items():
        params = T.UNET_PARAMS[model["family"]]
        if not is_hub_id(model["pretrained"]):
            local = local_unet_params(model["pretrained"])
            if local:
                params = local
            else:
                warnings.append(f"models.{name}.pretrained is a local directory not found here: sizes and FLOPs "
                                f"assume the published {model['family']} UNet")
        scale[name] = params / T.UNET_PARAMS[model["family"]]
        text_dim[name] = T.TEXT_DIM[model["family"]] if is_hub_id(model["pretrained"]) else \
            local_text_dim(model["pretrained"], model["family"])
        rates[name] = {"generate": T.generation_rate(model, peak, efficiency, found, scale[name]),
                       "dpo": T.dpo_rate(model, trains[name], peak, efficiency, found, scale[name])}
    score = {k: T.scorer_rate(k, cfg, peak, efficiency, found, qs) for k, qs in (
        ("stage3", q), ("tifa", TIFA_QUESTIONS_PER_PROMPT), ("hpsv2", 0), ("mjhq", 0), *((r, 0) for r in rewards))}

    def per(rate: dict) -> float:  # seconds per item on one GPU (0 on a CPU run: not modelled)
        return 1 / rate["value"] if on_gpu else 0.0

    def rows(*rule_names):
        return {r: rules[r] for r in rule_names if r in rules}

    images = prompts * n
    fetched = {"files": rules.get("download_file", 0), "hub repositories": rules.get("download_hub", 0)}
    stages = [_stage("downloads", rows("download_file", "download_hub"), fetched),
              _stage("models_tiny", rows("models_tiny"), {})]
    llm = [_llm_prompts(cfg, cats, prices), _llm_qa(cfg, cats, prompts, q, prices)]
    stages.append(_stage("prompts", rows("prompts_generate"), {"prompts": prompts, "requests": llm[0]["requests"]}))
    stages.append(_stage("qa", rows("qa_generate"), {"prompts": prompts, "questions": prompts * q,
                                                     "requests": llm[1]["requests"]}))
    g = job_gpus["candidates_generate"]
    # the models that make their own candidates, scores, pairs, caches, base images (agfsync.core.sharing)
    makes = {stage: set(sharing.makers(cfg, stage)) for stage in sharing.CHAIN}
    makes.update({(stage, b): set(sharing.makers(cfg, stage, b, kind)) for b in benches
                  for stage, kind in (("eval", None), ("per_image", "per_image"))})
    makers = [m for m in models if m in makes["candidates"]] or list(models)
    scorers = len(makes["scores"]) or 1
    gen_rates = {m: rates[m]["generate"] for m in models}
    stages.append(_stage("candidates_generate", rows("candidates_generate"), {"images": images * len(makers)}, g,
                         [(images * per(gen_rates[m]) / shards, shards) for m in makers],
                         {m: gen_rates[m] for m in makers}))
    stages.append(_stage("candidates_score", rows("candidates_score"),
                         {"images": images * scorers, "questions": images * q * scorers}, g,
                         [(images * per(score["stage3"]) / shards, shards * scorers)], {"stage3": score["stage3"]}))
    stages.append(_stage("pairs_select", rows("pairs_select"), {"pairs (at most)": prompts * len(makes["pairs"])}))
    vae = {m: trains[m]["latents"] == "vae" for m in models}  # 2 VAE encodes per pair, at half a decode's FLOPs
    tc = {m: T.derived_rate(
        T.TF_TEXT_ENCODERS[models[m]["family"]] + vae[m] * T.VAE_DECODE_TFLOP[models[m]["family"]], peak, efficiency,
        "text encoders (2 x parameters x 77 tokens)" + (", 2 VAE encodes at half a decode's FLOPs each (assumed)"
                                                        if vae[m] else ""), "pairs/s") for m in models}
    cachers = [m for m in models if m in makes["train_cache"]]
    stages.append(_stage("train_cache", rows("train_cache"), {"pairs": prompts * len(cachers)}, g,
                         [(prompts * per(tc[m]), 1) for m in cachers], {m: tc[m] for m in cachers},
                         "I/O-bound in practice: not modelled"))
    passes = {m: models[m]["train"]["steps"] * models[m]["train"]["global_batch"] for m in models}
    tg = job_gpus["train_dpo"]
    stages.append(_stage("train_dpo", rows("train_dpo"), {"pair passes": sum(passes.values()),
                                                          "steps": sum(models[m]["train"]["steps"] for m in models)},
                         tg, [(passes[m] * per(rates[m]["dpo"]) / max(tg, 1), 1) for m in models],
                         {m: rates[m]["dpo"] for m in models}))
    stages.append(_stage("eval_prompts", rows("eval_prompts"), {"benchmarks": len(benches)}))
    # a model's evaluation: its AGFSync images, and the base model's where no earlier model's are the same
    drawn = {b: len(models) + len(makes["eval", b]) for b in benches}
    scored = {b: len(models) + len(makes["per_image", b]) for b in benches}
    eval_images = sum(benches[b] * drawn[b] for b in benches)
    stages.append(_stage("eval_generate", rows("eval_generate"), {"images": eval_images}, g,
                         [(benches[b] * per(gen_rates[m]) / eval_shards[b], (1 + (m in makes["eval", b])) * eval_shards[b])
                          for m in models for b in benches], gen_rates))
    bench_rate = {"tifa": score["tifa"], "hpsv2": score["hpsv2"], "mjhq": score["mjhq"]}
    durations = [(benches[b] * per(bench_rate[b]) / eval_shards[b], scored[b] * eval_shards[b]) for b in benches]
    durations.append((benches.get("mjhq", 0) * per(score["mjhq"]), rules.get("eval_reference_mjhq", 0)))
    items = {"images": sum(benches[b] * scored[b] for b in benches)}
    if "tifa" in benches:
        items["TIFA questions"] = round(benches["tifa"] * scored["tifa"] * TIFA_QUESTIONS_PER_PROMPT)
    if "mjhq" in benches:
        items["reference images"] = benches["mjhq"]
    stages.append(_stage("eval_score", rows("eval_score", "eval_reference_mjhq"), items, g, durations,
                         {b: bench_rate[b] for b in benches}))
    local = [r for r in rewards if not uses_endpoint(cfg, r)]
    rated = {r: len(models) + len(sharing.makers(cfg, "per_image", reward_bench(cfg, r), r)) for r in rewards}
    reward_images = {r: benches[reward_bench(cfg, r)] * rated[r] for r in rewards}
    stages.append(_stage("eval_reward", rows("eval_reward", "eval_reward_endpoint"),
                         {"images scored": sum(reward_images.values())}, g if local else 0,
                         [(benches[reward_bench(cfg, r)] * per(score[r]) / eval_shards[reward_bench(cfg, r)],
                           rated[r] * eval_shards[reward_bench(cfg, r)]) for r in local],
                         {r: score[r] for r in local}))
    traj = cfg["eval"]["trajectory"]
    traj_images = {m: (len(trains[m].get("snapshots") or ()) + 2) * min(traj["prompts"], benches.get("tifa", 0))
                   if dag.trajectory_enabled(cfg) else 0 for m in models}  # base, snapshots, final
    stages.append(_stage("eval_trajectory", rows("eval_trajectory"), {"images": sum(traj_images.values())}, g,
                         [(traj_images[m] * (per(gen_rates[m]) + per(score["stage3"])), 1) for m in models]))
    stages.append(_stage("eval_metric", rows("eval_metric"), {"metric files": rules.get("eval_metric", 0)}))
    if "vqascore" in rewards and uses_endpoint(cfg, "vqascore"):
        llm.append(_llm_vqascore(cfg, reward_images["vqascore"], models, prices))
    judged = 0
    if cfg["eval"]["judge"]["enabled"]:
        judge = cfg["eval"]["judge"]
        judged = min(judge["max_pairs"], benches.get(judge["benchmark"], 0))
        llm.append(_llm_judge(cfg, judged * len(models), models, prices))
    stages.append(_stage("judge", rows("eval_judge"), {"pairs judged": judged * len(models)}))
    stages.append(_stage("report", rows("report"), {}))
    by_llm = {"prompts": llm[0], "qa": llm[1], "judge": next((x for x in llm if x["stage"] == "judge"), None),
              "eval_reward": next((x for x in llm if x["stage"] == "vqascore"), None)}
    stages = [s for s in stages if s["jobs"]]
    for s in stages:
        s["wall_s"] = by_llm[s["stage"]]["wall_s"] if by_llm.get(s["stage"]) and not s["gpus_per_job"] else None
        s["wall_s"] = _wall(s, gpus, warnings) if on_gpu else s["wall_s"]
    got = downloads(cfg)
    folders = disk(cfg, models, trains, prompts, q, benches, rewards, traj_images, scale, text_dim, got,
                   llm_cache_bytes(llm), _mean_prompt_chars(cats), makes)
    costs = [x["cost_usd"] for x in llm]
    totals = {"jobs": sum(rules.values()), "gpu_hours": sum(s["gpu_hours"] for s in stages),
              "wall_s": sum(s["wall_s"] or 0 for s in stages) if on_gpu else None,
              "disk_bytes": sum(f["bytes"] for f in folders), "download_bytes": got["bytes"],
              "llm_requests": sum(x["requests"] for x in llm), "tokens_in": sum(x["tokens_in"] for x in llm),
              "tokens_out": sum(x["tokens_out"] for x in llm),
              "cost_usd": sum(c for c in costs if c is not None), "cost_complete": None not in costs}
    return {"config": {"run_models": list(models), "device": cfg["device"], "gpu": gpu, "gpus": gpus,
                       "efficiency": efficiency, "prompts": prompts, "num_per_prompt": n, "questions_per_prompt": q},
            "gpu": {"name": gpu, "peak_bf16_tflops": peak, "source": peak_source,
                    "measurements": found.get("file"), "on_gpu": on_gpu},
            "stages": stages, "rules": rules, "disk": folders, "downloads": got, "llm": llm, "totals": totals,
            "assumptions": _assumptions(cfg, gpu, peak, efficiency, found, on_gpu, q), "warnings": warnings}


# ----------------------------------------------------------------------------- LLM requests


def _mean_prompt_chars(cats) -> float:
    return mean(len(e) for c in cats for e in c.examples)


def _llm_prompts(cfg, cats, prices) -> dict:
    p = cfg["prompts"]
    per, target = p["descriptions_per_request"], p["per_category"]
    cap = p["max_requests_per_category"] or 3 * math.ceil(target / per)  # the stage's own bound per category
    batches = min(math.ceil(target / per), cap)  # the first round: enough for the target if nothing is dropped
    tin = mean(S.PROMPTS_FIXED_CHARS + 2 * len(c.name) + len(c.focus) + len("\n".join(f"- {e}" for e in c.examples))
               + len(str(per)) for c in cats) / S.CHARS_PER_TOKEN
    tout = (per * (_mean_prompt_chars(cats) + 4) + 20) / S.CHARS_PER_TOKEN
    return _llm_stage("prompts", p["llm"], batches * len(cats), tin, tout, prices, cap * len(cats))


def _llm_qa(cfg, cats, prompts, q, prices) -> dict:
    mode = cfg["qa"]["mode"]
    tin = (S.QA_FIXED_CHARS[mode] + _mean_prompt_chars(cats)) / S.CHARS_PER_TOKEN
    tout = (q * (S.QA_PAIR_CHARS[mode] + 2) + 10) / S.CHARS_PER_TOKEN
    return _llm_stage("qa", cfg["qa"]["llm"], prompts, tin, tout, prices)


def _resolution(models) -> int:
    return max(m["resolution"] for m in models.values())


def _llm_judge(cfg, requests, models, prices) -> dict:
    tin = (S.JUDGE_FIXED_CHARS + S.BENCH_PROMPT_CHARS) / S.CHARS_PER_TOKEN + 2 * S.image_tokens(_resolution(models))
    return _llm_stage("judge", cfg["eval"]["judge"]["llm"], requests, tin, S.JUDGE_OUT_TOKENS, prices)


def _llm_vqascore(cfg, requests, models, prices) -> dict:
    tin = (S.VQASCORE_QUESTION_CHARS + S.BENCH_PROMPT_CHARS) / S.CHARS_PER_TOKEN + S.image_tokens(_resolution(models))
    return _llm_stage("vqascore", cfg["eval"]["vqascore"]["llm"], requests, tin, 1, prices)


def _assumptions(cfg, gpu, peak, efficiency, found, on_gpu, q) -> list[str]:
    out = []
    if not on_gpu:
        out.append("device: cpu: no job holds a GPU, so GPU-hours are 0 and GPU wall times are not estimated "
                   "(measured on 2 cores, README 2026-11-30: config/demo.yaml 7 min 51 s, config/tiny.yaml 7-9 min)")
    else:
        where = (f"measured where {found['file']} ({found['date']}) has the setting, else derived" if found else
                 f"derived (no GPU measurement for {gpu} in bench/measurements; bench/README.md: pending)")
        out.append(f"throughputs: {where}: items/s = {peak:g} TFLOP/s ({gpu} dense BF16 peak) x efficiency "
                   f"{efficiency:g} (assumed, not measured) / FLOPs per item; FLOP-bound, so PNG decoding, data "
                   f"loading and communication are not modelled: times are lower bounds")
        out.append("wall time: jobs of a stage run in parallel on the GPUs (perfect packing), stages one after "
                   "another (base-model evaluation alongside training is not counted); a job's GPUs: 1 per model job, "
                   "train.gpus x train.nodes per training")
    out += [f"prompts = categories x prompts.per_category (the target; QA may drop some), pairs <= prompts; "
            f"{q} QA pairs per prompt (the QA stage's worked example, within qa.min_pairs..max_pairs)",
            f"TIFA: {TIFA_QUESTIONS_PER_PROMPT:.2f} questions per prompt (~25k over 4,081 prompts)",
            f"candidate and evaluation PNGs: {S.PNG_BYTES_PER_PIXEL} bytes per pixel (lossless level-1 PNG of "
            f"photographic 8-bit RGB, about half of raw: assumed, not measured on SD images) plus the tar header",
            "latents: fp16 4 x H/8 x W/8 x 2 bytes per image; train cache: 2 latents, 77 x text width fp16 "
            "embeddings (+ SDXL pooled) per pair",
            "checkpoints: train.keep_checkpoints x UNet parameters x (4 B fp32 module weights + 4 B ZeRO's fp32 "
            "master partition (zero_stage >= 1) + optimizer states: AdamW 8 B, AdamW8bit 2 B); LoRA: the module "
            "weights only; fine-tuned UNet: fp32 + fp16 copy (6 B per parameter), train.snapshots 4 B each",
            f"LLM tokens: {S.CHARS_PER_TOKEN:g} characters per token of the stages' own request templates; "
            "outputs as the worked examples (a description ~ a category example, a QA record ~ the example's); "
            "first asks only: retries and repair re-asks add to them (the demo's world writer: 1 in 25 each); "
            f"images at high detail {S.IMAGE_BASE_TOKENS} + {S.IMAGE_TILE_TOKENS} per 512-px tile (OpenAI's formula)",
            f"LLM prices: USD per 1M tokens, list prices {S.PRICES_DATE} (plan_sizes.PRICES) unless given; LLM wall "
            f"time: {S.LLM_LATENCY_S:g} s + output at {S.LLM_OUT_TOKENS_PER_S:g} tokens/s per request, llm.concurrency "
            f"at once, rate limits not modelled (assumed)",
            "download sizes: hub listings, with every file downloads.hub_ignore lets through (duplicate .bin "
            "weights, OpenVINO copies, single-file checkpoints included); 'at least' where some sizes are unknown"]
    return out
