# Config validation and input functions shared by all rules. Imports no torch:
# `snakemake -n` must stay fast on a machine without GPU, weights or network.

from snakemake.utils import validate

from agfsync.config import SCHEMA_PATH, check_config, without_operational
from agfsync.shards import num_shards, shard_name

# Ours first, for messages that name the key; then Snakemake's own validation against
# the same schema (it also fills defaults, as ours does).
check_config(config, source="config")
validate(config, schema=str(SCHEMA_PATH))

TINY_MODELS = config["tiny_models"]["dir"]

# Candidate shards: their number is fixed by the config (an upper bound on prompts /
# shard_size), so the whole DAG is known at parse time and dry runs list every job.
SHARDS = [shard_name(i) for i in range(num_shards(config))]


wildcard_constraints:
    model="|".join(sorted(config["models"])),
    shard=r"\d{5}",

# Per-model targets of `rule all`, as patterns over {model}. Each stage's rules file
# appends what it produces; the Snakefile expands them over config["run_models"].
MODEL_TARGETS = []


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
    return targets


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
