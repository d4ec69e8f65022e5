# Config validation and input functions shared by all rules. Imports no torch:
# `snakemake -n` must stay fast on a machine without GPU, weights or network.

import os

from snakemake.utils import validate

from agfsync.benchmarks import VARIANTS, num_eval_shards
from agfsync.benchmarks import enabled as enabled_benchmarks
from agfsync.config import (SCHEMA_PATH, check_config, check_config_files, config_digest, resolve_config,
                            without_operational)
from agfsync.downloads import hub_marker, hub_repos, needed
from agfsync.hps import STYLES
from agfsync.launch import launcher_kind
from agfsync.results import SOURCE, metrics_for
from agfsync.shards import num_shards, shard_name

# The whole config: config/config.yaml, or the --configfile over what its `extends:` names.
# Resolved here, not by a `configfile:` directive, so that jobs on a cluster (which get the
# same --configfile, but not --replace-workflow-config) see exactly this config too.
# Snakemake read the --configfile files with its own YAML loader, which keeps the last of
# two equal keys without a word: read them again with ours, which names both lines.
check_config_files(workflow.configfiles)
_resolved = resolve_config(config, source="config")
config.clear()
config.update(_resolved)

# Ours first, for messages that name the key; then Snakemake's own validation against
# the same schema (it also fills defaults, as ours does).
check_config(config, source="config")
validate(config, schema=str(SCHEMA_PATH))

TINY_MODELS = config["tiny_models"]["dir"]
CONFIG_HASH = config_digest(config)

# Compute jobs never reach the Hugging Face hub (cluster compute nodes often have no
# internet): everything comes from the download rules, which run on the login node and
# switch this off for themselves (agfsync.downloads).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
DOWNLOAD_FILES = {entry["path"]: entry for entry in config["downloads"]["files"]}
HUB_REPOS = hub_repos(config)


def needs(*values):
    """The download outputs that provide these config values (agfsync.downloads.needed)."""
    return needed(values, DOWNLOAD_FILES, HUB_REPOS)


def model_needs(*keys):
    """Input function: downloads behind models.{model}.<key> values."""
    return lambda w: needs(*(config["models"][w.model][key] for key in keys))

# Candidate shards: their number is fixed by the config (an upper bound on prompts /
# shard_size), so the whole DAG is known at parse time and dry runs list every job.
SHARDS = [shard_name(i) for i in range(num_shards(config))]


wildcard_constraints:
    model="|".join(sorted(config["models"])),
    shard=r"\d{5}",

# Per-model targets of `rule all`, as patterns over {model}. Each stage's rules file
# appends what it produces; the Snakefile expands them over config["run_models"].
MODEL_TARGETS = []
RUN_TARGETS = []  # targets over all models (the report)


def final_targets():
    targets = [
        "results/prompts/prompts.jsonl",
        "results/prompts/prompts_summary.json",
        "results/prompts/qa.jsonl",
        "results/prompts/qa_summary.json",
    ]
    if config["tiny_models"]["enabled"]:
        targets.append(TINY_MODELS)
    for model in config["run_models"]:
        targets += [pattern.format(model=model) for pattern in MODEL_TARGETS]
    return targets + RUN_TARGETS


def tiny_models_input():
    """The tiny-model directory, as an input of every rule that loads a model in the demo."""
    return [TINY_MODELS] if config["tiny_models"]["enabled"] else []


def llm_inputs(stage):
    """Recorded responses are an input when the stage replays them (provider: file)."""
    llm = config[stage]["llm"]
    return [llm["responses"]] if llm["provider"] == "file" else []


def stage_config(*sections):
    """The config a stage's job sees: the global keys plus the named (dotted) sections.
    Passed as params, and Snakemake reruns a job when its params change: so a rule names
    only what determines its output, and LLM settings that cannot change an answer
    (agfsync.config.LLM_OPERATIONAL_KEYS) are left out."""
    out = {"seed": config["seed"], "device": config["device"], "llm_cache_dir": config["llm_cache_dir"]}
    for section in sections:
        node, target = config, out
        keys = section.split(".")
        for key in keys[:-1]:
            node = node[key]
            target = target.setdefault(key, {})
        target[keys[-1]] = node[keys[-1]]
    return canonical(without_operational(out))


def canonical(value):
    """Dicts with sorted keys, recursively: Snakemake's params comparison depends on key
    order, and reordering keys in a config file must not rerun anything."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def model_keys(model, *keys):
    """Dotted config paths of one model's settings, for stage_config."""
    return [f"models.{model}.{key}" for key in keys]


def model_gpus(wildcards=None):
    """GPUs a model job asks for: none when the config runs models on the CPU."""
    return 0 if config["device"] == "cpu" else 1


def train_resources():
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


# ----------------------------------------------------------------------------- evaluation
# Benchmarks, their shard counts (fixed at parse time, like the candidate shards) and the
# input functions of rules/eval.smk and rules/report.smk.

EVAL_BENCHES = enabled_benchmarks(config)
EVAL_SHARDS = {bench: [shard_name(i) for i in range(num_eval_shards(config, bench))] for bench in EVAL_BENCHES}
EVAL_METRICS = metrics_for(config)


def benchmark_files(w):
    section = config["eval"][w.bench]
    if w.bench == "tifa":
        return [section["text_inputs"], section["questions"]]
    if w.bench == "hpsv2":
        return [f"{section['prompts_dir']}/{style}.json" for style in STYLES]
    return [section["meta"]]


def eval_unet(w):
    """The fine-tuned UNet is an input of the agfsync variant only: base images never wait for training."""
    return ["results/{model}/agfsync".format(model=w.model)] if w.variant == "agfsync" else []


def eval_outputs(model, variant, bench, kind):
    """Per-shard files of one model, variant and benchmark: shard (images), scores or features."""
    pattern = {"shard": "shard-{shard}.tar", "scores": "scores-{shard}.jsonl", "features": "features-{shard}.npz"}[kind]
    return [f"results/{model}/eval/{variant}/{bench}/{pattern.format(shard=s)}" for s in EVAL_SHARDS[bench]]


def metric_inputs(w):
    bench = SOURCE[w.metric]
    kind = {"tifa": "scores", "hpsv2": "scores", "mjhq": "features"}[bench]
    inputs = {v: eval_outputs(w.model, v, bench, kind) for v in VARIANTS}
    if bench == "mjhq":
        inputs["reference"] = "results/eval/mjhq/reference_features.npz"
    return inputs


def report_inputs(wildcards=None):
    """Everything the report shows: metric files, training metrics, pairs and the shards
    its image grids come from (all candidate shards: pairs point into any of them)."""
    inputs = []
    for model in config["run_models"]:
        inputs += [f"results/{model}/{metric}.json" for metric in EVAL_METRICS]
        inputs += [f"results/{model}/agfsync", f"results/{model}/pairs.jsonl", f"results/{model}/pairs_summary.json"]
        inputs += [f"results/{model}/candidates/shard-{shard}.tar" for shard in SHARDS]
        inputs += [f"results/{model}/eval/{v}/{b}/shard-{shard_name(0)}.tar" for v in VARIANTS for b in EVAL_BENCHES]
    return inputs
