"""The workflow's DAG logic, out of the .smk files so that it is unit-tested (tests/test_dag.py).

Every function takes the resolved config explicitly (workflow/rules/common.smk binds them
to Snakemake's `config`); paths come from agfsync.core.layout. Pure: no torch, no Snakemake.

  stage_config      the params of a job: the config sections that determine its output
  canonical         dicts with sorted keys (params compare in key order)
  train_resources   train_dpo's resources, in the SLURM plugin's terms
  job_gpus          GPUs a job of each rule holds (GPU-hours)
  *_shards          shard lists, fixed at parse time (the whole DAG is known to a dry run)
  *_inputs          input functions of the rules, as plain functions of (config, wildcard values)
  final_targets     everything `rule all` asks for
"""

from __future__ import annotations

from agfsync.core import layout, sharing
from agfsync.core.benchmarks import STYLES, VARIANTS, enabled, metric_source, metrics_for, num_eval_shards
from agfsync.core.config import without_operational
from agfsync.core.rewards import REWARDS
from agfsync.core.shards import num_shards, shard_name

# The scorers of stage 3 (candidates_score) and of the TIFA images (eval_score, bench tifa):
# their config sections (a job's params), and the config values behind their weights (downloads).
SCORER_SECTIONS = ("scores.vqa", "scores.clip", "scores.aesthetic")
SCORER_KEYS = (("vqa", "model"), ("clip", "model"), ("aesthetic", "backbone"), ("aesthetic", "head"))
# pairs_select: it computes the weighted total, so the weights are its params (not the scorers').
PAIRS_SECTIONS = ("candidates.num_per_prompt", "pairs", "scores.weights")
# The model settings an image-generating job depends on.
GENERATION_KEYS = ("pretrained", "revision", "family", "resolution", "generation")


# ----------------------------------------------------------------------------- declarations
# What each rule's job reads of the config, as dotted keys ({model}, {bench} and {judge_bench}
# filled per job). The one declaration serves twice: it is the job's params (Snakemake reruns
# exactly the jobs whose declared keys changed) and the only settings its stage can read (the
# rest is agfsync.core.settings.Undeclared, which raises on first read). The stage tests build
# their settings from it too (stage_settings), so a stage that starts reading an undeclared key
# fails in its unit test, not in a workflow job. seed, device and llm_cache_dir are always given.

_GEN = tuple(f"models.{{model}}.{key}" for key in GENERATION_KEYS)
DECLARED: dict[str, tuple[str, ...]] = {
    "prompts_generate": ("prompts", "scores.clip"),
    "qa_generate": ("qa",),
    "candidates_generate": ("cpu_threads", *_GEN, "candidates"),
    "candidates_score": ("cpu_threads", *SCORER_SECTIONS),
    "pairs_select": PAIRS_SECTIONS,
    "train_cache": ("cpu_threads", "models.{model}.pretrained", "models.{model}.revision", "models.{model}.family",
                    "models.{model}.resolution", "train.latents", "train.cache_chunk"),
    "train_dpo": ("cpu_threads", "models.{model}", "train"),
    "eval_prompts": ("eval.{bench}",),
    "eval_generate": ("cpu_threads", *_GEN, "candidates.attention", "eval.shard_size", "eval.prompts_per_batch"),
    # the stage-3 scorers, the gold answerer, the answering protocol
    "eval_score:tifa": ("cpu_threads", *SCORER_SECTIONS, "eval.tifa.gold", "eval.tifa.answering", "eval.tifa.sbert"),
    "eval_score": ("cpu_threads", "eval.{bench}"),  # HPS v2 model, MJHQ feature extractor
    "eval_reference_mjhq": ("cpu_threads", "eval.mjhq"),
    "eval_reward": ("cpu_threads", "eval.{reward}"),  # one reward model (agfsync.core.rewards)
    "eval_reward_endpoint": ("eval.{reward}",),  # VQAScore through an endpoint: no model job
    "eval_metric": ("models.{model}.pretrained", "models.{model}.resolution", "eval", "scores.vqa.model",
                    "scores.vqa.method", "scores.vqa.choice_likelihood", "scores.clip.model", "scores.aesthetic",
                    "scores.weights"),  # proxy: the stage-3 weighted total
    "eval_judge": ("models.{model}.pretrained", "eval.judge", "eval.{judge_bench}.version"),
    "eval_trajectory": ("cpu_threads", *_GEN, "candidates.attention", "eval.prompts_per_batch", "eval.trajectory",
                        "eval.tifa.gold", *SCORER_SECTIONS, "scores.weights"),
    "report": ("run_models", "models", "tiny_models", "eval", "candidates.num_per_prompt"),
    "world_build": ("world.seed",),
}


def declared(config: dict, rule: str, **wildcards) -> tuple[str, ...]:
    """The dotted config keys a job of `rule` reads (DECLARED, with its wildcards filled)."""
    bench = wildcards.get("bench")
    entry = DECLARED.get(f"{rule}:{bench}") or DECLARED[rule]
    judge_bench = config.get("eval", {}).get("judge", {}).get("benchmark")
    return tuple(key.format(judge_bench=judge_bench, **wildcards) for key in entry)


def stage_params(config: dict, rule: str, **wildcards) -> dict:
    """A job's params: stage_config of what its rule declares, as the job's model sees the config
    (its models.<model>.overrides merged: agfsync.core.overrides)."""
    from agfsync.core.overrides import for_model

    return stage_config(for_model(config, wildcards.get("model")), *declared(config, rule, **wildcards))


def stage_settings(config: dict, rule: str, **wildcards):
    """The typed settings a job of `rule` sees: its params, with the LLM keys that only
    change how answers are fetched put back from the full config (as agfsync.core.jobs does)."""
    from agfsync.core.config import with_operational
    from agfsync.core.sections import Settings

    return Settings.from_dict(with_operational(stage_params(config, rule, **wildcards), config), partial=True)


# ----------------------------------------------------------------------------- params


# Keys a job's params leave out while another key makes them unused (key -> (that key, the value
# under which it is used)): a new key of this kind (with its default), or a change of it, then
# reruns no job it does not matter to.
UNUSED_UNLESS = {"prompts.dedup.model": ("prompts.dedup.embedder", "bge")}


def _get(node: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def without_unused(params: dict) -> dict:
    """params (the stage's own copy: without_operational deep-copies) less the UNUSED_UNLESS
    keys whose condition does not hold."""
    for dotted, (switch, value) in UNUSED_UNLESS.items():
        *parents, leaf = dotted.split(".")
        holder = _get(params, ".".join(parents))
        if isinstance(holder, dict) and _get(params, switch) != value:
            holder.pop(leaf, None)
    return params


def stage_config(config: dict, *sections: str) -> dict:
    """The config a stage's job sees: the global keys plus the named (dotted) sections.
    Passed as params, and Snakemake reruns a job when its params change: so a rule names
    only what determines its output, and LLM settings that cannot change an answer
    (agfsync.core.config.LLM_OPERATIONAL_KEYS) are left out."""
    out = {"seed": config["seed"], "device": config["device"], "llm_cache_dir": config["llm_cache_dir"]}
    for section in sections:
        node, target = config, out
        keys = section.split(".")
        for key in keys[:-1]:
            node = node[key]
            target = target.setdefault(key, {})
        target[keys[-1]] = node[keys[-1]]
    return canonical(without_unused(without_operational(out)))


def canonical(value):
    """Dicts with sorted keys, recursively: Snakemake's params comparison depends on key
    order, and reordering keys in a config file must not rerun anything."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


# ----------------------------------------------------------------------------- resources


def launcher_kind(train) -> str:
    """'standalone' (one node) or 'srun' (several) for a train section: the config's dict (the
    workflow at parse time) or agfsync.core.sections.TrainSettings (the launcher)."""
    from collections.abc import Mapping

    nodes = train.get("nodes", 1) if isinstance(train, Mapping) else train.nodes
    return "srun" if nodes > 1 else "standalone"


def model_gpus(config: dict) -> int:
    """GPUs a model job asks for: none when the config runs models on the CPU."""
    return 0 if config["device"] == "cpu" else 1


def train_resources(config: dict) -> dict:
    """Resources of train_dpo, in the SLURM plugin's own terms (never slurm_extra).
    One node: `gpu` = train.gpus (sbatch --gpus with --nodes=1; a workstation's
    `--resources gpu=N` counts them) and tasks_per_gpu=0, so that one task runs torchrun
    with a process per GPU. Several nodes: one task per node, `gres=gpu:G` (per node,
    unlike --gpus) and `mpi`, so that the job step runs the launcher itself, not under
    `srun -n1`, and the launcher's own `srun torchrun` spans the nodes."""
    train = config["train"]
    gpus = 0 if config["device"] == "cpu" else train["gpus"]
    if launcher_kind(train) == "standalone":
        return {"gpu": gpus, "nodes": 1, "tasks_per_gpu": 0}
    out = {"nodes": train["nodes"], "tasks": train["nodes"], "mpi": "srun", "tasks_per_gpu": 0}
    if gpus:
        out["gres"] = f"gpu:{gpus}"
    return out


# The rules whose jobs ask for `gpu=MODEL_GPUS` (workflow/rules/*.smk; tests/test_costs.py
# checks this list against the .smk files). train_dpo asks for train_resources; the rest none.
MODEL_GPU_RULES = ("candidates_generate", "candidates_score", "train_cache", "eval_generate", "eval_score",
                   "eval_reward", "eval_reference_mjhq", "eval_trajectory")


def job_gpus(config: dict) -> dict[str, int]:
    """GPUs one job of each GPU rule holds, from the same resources the rules ask for
    (model_gpus; train_resources, over all its nodes); other rules hold none. GPU-hours are
    counted in these (agfsync.core.costs)."""
    train = train_resources(config)
    per_node = train.get("gpu") or int(train.get("gres", "gpu:0").rsplit(":", 1)[1])
    return {**{rule: model_gpus(config) for rule in MODEL_GPU_RULES}, "train_dpo": per_node * train["nodes"]}


# ----------------------------------------------------------------------------- shards


def candidate_shards(config: dict) -> list[str]:
    """Candidate shards: their number is fixed by the config (an upper bound on prompts /
    shard_size), so the whole DAG is known at parse time and dry runs list every job."""
    return [shard_name(i) for i in range(num_shards(config))]


def eval_shards(config: dict) -> dict[str, list[str]]:
    """Evaluation shards of each enabled benchmark (fixed at parse time, like the candidates')."""
    return {bench: [shard_name(i) for i in range(num_eval_shards(config, bench))] for bench in enabled(config)}


# ----------------------------------------------------------------------------- inputs


# The model families agfsync.demo.tiny_models builds (rule models_tiny's params: a new family
# rebuilds the directory). Here, not in the demo wing, because the workflow reads it at parse time.
TINY_FAMILIES = ("sd1", "sdxl", "clip", "blip2", "aesthetic", "hps", "fid", "sbert", "imagereward")


def tiny_models_input(config: dict) -> list[str]:
    """The tiny-model directory, as an input of every rule that loads a model in the demo."""
    return [config["tiny_models"]["dir"]] if config["tiny_models"]["enabled"] else []


def llm_inputs(config: dict, stage: str) -> list[str]:
    """Recorded responses are an input when the stage replays them (provider: file).
    `stage` is the dotted section that holds the `llm:` settings: prompts, qa, eval.judge."""
    node = config
    for key in stage.split("."):
        node = node[key]
    llm = node["llm"]
    return [llm["responses"]] if llm["provider"] == "file" else []


def scorer_values(config: dict) -> list:
    """Config values behind the stage-3 scorers' weights (for their downloads)."""
    return [config["scores"][section][key] for section, key in SCORER_KEYS]


def eval_score_values(config: dict, bench: str) -> list:
    """Config values behind the weights an eval_score job of this benchmark loads."""
    if bench == "tifa":
        return scorer_values(config) + tifa_answering_values(config)
    if bench == "hpsv2":
        return [config["eval"]["hpsv2"]["checkpoint"]]
    return mjhq_feature_values(config)


def dedup_values(config: dict) -> list:
    """Config values behind the weights the prompt stage's near-duplicate embedder loads."""
    dedup = config["prompts"]["dedup"]
    return {"bge": [dedup["model"]], "clip": [config["scores"]["clip"]["model"]]}.get(dedup["embedder"], [])


def tifa_answering_values(config: dict) -> list:
    """Config values behind the weights of TIFA's official answering (its sentence embedder)."""
    tifa = config["eval"]["tifa"]
    return [tifa["sbert"]] if tifa.get("enabled") and tifa.get("answering") == "tifa" else []


def mjhq_feature_values(config: dict) -> list:
    """Config values behind the MJHQ FID feature extractor (eval_score on mjhq, eval_reference_mjhq)."""
    return [config["eval"]["mjhq"][key] for key in ("features", "inception_weights")]


def benchmark_files(config: dict, bench: str) -> list[str]:
    """The downloaded files a benchmark's prompt list is read from (eval_prompts)."""
    section = config["eval"][bench]
    if bench == "tifa":
        return [section["text_inputs"], section["questions"]]
    if bench == "hpsv2":
        return [f"{section['prompts_dir']}/{style}.json" for style in STYLES]
    return [section["meta"]]


def eval_unet(model: str, variant: str) -> list[str]:
    """The fine-tuned UNet is an input of the agfsync variant only: base images never wait for training."""
    return [layout.TRAINED.format(model=model)] if variant == "agfsync" else []


def check_per_image(bench: str, kind: str, ext: str) -> None:
    """eval_score's output pattern leaves {kind} and {ext} free: only the benchmark's own
    file name (layout.PER_IMAGE) is a valid output."""
    if (kind, ext) != layout.PER_IMAGE[bench]:
        want_kind, want_ext = layout.PER_IMAGE[bench]
        raise ValueError(f"eval_score writes {want_kind}-<shard>.{want_ext} for benchmark {bench}, "
                         f"not {kind}-<shard>.{ext}")


def check_reward_bench(config: dict, reward: str, bench: str) -> None:
    """eval_reward's output pattern leaves {bench} free: a reward scores the images of the
    benchmark its section names, and no other."""
    want = config["eval"][reward]["benchmark"]
    if bench != want:
        raise ValueError(f"{reward} scores the images of {want} (eval.{reward}.benchmark), not of {bench}")


def eval_outputs(config: dict, model: str, variant: str, bench: str, kind: str) -> list[str]:
    """Per-shard files of one model, variant and benchmark: "shard" (the images) or
    "per_image" (their scores or features); base images and their scores may be another
    model's (agfsync.core.sharing)."""
    shards = eval_shards(config)[bench]
    model = sharing.eval_source(config, model, variant, bench, kind)
    if kind == "shard":
        return [layout.EVAL_SHARD.format(model=model, variant=variant, bench=bench, shard=s) for s in shards]
    if kind == "per_image":
        return [layout.per_image(model, variant, bench, s) for s in shards]
    if kind in REWARDS:
        return [layout.REWARD_PER_IMAGE.format(model=model, variant=variant, bench=bench, reward=kind, shard=s)
                for s in shards]
    raise ValueError(f"unknown kind {kind!r} (shard, per_image, or a reward: {', '.join(REWARDS)})")


def metric_inputs(config: dict, model: str, metric: str) -> dict:
    """Inputs of eval_metric: the per-image files of both variants (a reward model's own files),
    and for FID the reference."""
    bench = metric_source(config, metric)
    kind = metric if metric in REWARDS else "per_image"
    inputs = {v: eval_outputs(config, model, v, bench, kind) for v in VARIANTS}
    if bench == "mjhq":
        inputs["reference"] = layout.MJHQ_REFERENCE
    return inputs


def report_paths(config: dict) -> dict:
    """What the report page reads, per run model (agfsync.report.page.build_report): the
    metric files, the training metrics and summary, the pairs and their summary, every
    candidate shard and its scores (the candidates grid: pairs point into any of them), the
    first evaluation shard of each benchmark and variant (samples), every TIFA shard and its
    per-image scores with the TIFA prompt list (distributions, the largest gains and losses),
    the trajectory (None unless eval.trajectory runs) and the prompts summary (the scale)."""
    first = shard_name(0)
    candidates = candidate_shards(config)
    tifa_shards = eval_shards(config).get("tifa", [])
    out = {}
    for model in config["run_models"]:
        source = {stage: sharing.source(config, stage, model) for stage in ("candidates", "scores", "pairs")}
        tifa = None
        if tifa_shards:
            tifa = {"prompts": layout.EVAL_PROMPTS.format(bench="tifa"),
                    "shards": {v: eval_outputs(config, model, v, "tifa", "shard") for v in VARIANTS},
                    "scores": {v: eval_outputs(config, model, v, "tifa", "per_image") for v in VARIANTS}}
        out[model] = {
            "metrics": {metric: layout.METRIC.format(model=model, metric=metric) for metric in metrics_for(config)},
            "train_metrics": layout.TRAIN_METRICS.format(model=model),
            "train_summary": layout.TRAIN_SUMMARY.format(model=model),
            "pairs": layout.PAIRS.format(model=source["pairs"]),
            "pairs_summary": layout.PAIRS_SUMMARY.format(model=source["pairs"]),
            "eval_shards": {bench: {v: eval_outputs(config, model, v, bench, "shard")[0] for v in VARIANTS}
                            for bench in enabled(config)},
            "trajectory": layout.TRAJECTORY.format(model=model) if trajectory_enabled(config) else None,
            "prompts_summary": layout.PROMPTS_SUMMARY,
            "candidate_shards": {s: layout.CANDIDATE_SHARD.format(model=source["candidates"], shard=s) for s in candidates},
            "score_shards": {s: layout.SCORES_SHARD.format(model=source["scores"], shard=s) for s in candidates},
            "tifa": tifa,
        }
    return out


def report_inputs(config: dict) -> list[str]:
    """Every file the report reads (report_paths), the training directory standing for its
    metrics and summary: the rule reruns when any of them changes."""
    inputs = [layout.PROMPTS_SUMMARY]
    for model, files in report_paths(config).items():
        inputs += list(files["metrics"].values())
        inputs += [layout.TRAINED.format(model=model), files["pairs"], files["pairs_summary"]]
        inputs += list(files["candidate_shards"].values()) + list(files["score_shards"].values())
        inputs += [path for by_variant in files["eval_shards"].values() for path in by_variant.values()]
        if files["tifa"]:
            inputs += [files["tifa"]["prompts"]] if files["tifa"]["prompts"] not in inputs else []
            inputs += [p for kind in ("shards", "scores") for v in VARIANTS for p in files["tifa"][kind][v]]
        inputs += [files["trajectory"]] if files["trajectory"] else []
    return list(dict.fromkeys(inputs))


# ----------------------------------------------------------------------------- targets


def final_targets(config: dict) -> list[str]:
    """Every target of `rule all`: the prompts, the tiny models (demo), per run model its
    pairs (or the model's whose it shares), fine-tuned UNet and metric files, then the report and the table of its numbers."""
    targets = [layout.PROMPTS, layout.PROMPTS_SUMMARY, layout.QA, layout.QA_SUMMARY]
    targets += tiny_models_input(config)
    for model in config["run_models"]:
        pairs = sharing.source(config, "pairs", model)  # an earlier model's, where they agree
        targets += [layout.PAIRS.format(model=pairs), layout.PAIRS_SUMMARY.format(model=pairs),
                    layout.TRAINED.format(model=model)]
        targets += [layout.METRIC.format(model=model, metric=metric) for metric in metrics_for(config)]
        targets += [layout.TRAJECTORY.format(model=model)] if trajectory_enabled(config) else []
    return targets + [layout.REPORT, layout.METRICS_TSV]


def trajectory_enabled(config: dict) -> bool:
    """eval.trajectory runs on the TIFA benchmark's prompts: both must be enabled."""
    return bool(config["eval"]["trajectory"]["enabled"] and config["eval"]["tifa"]["enabled"])
