# Config resolution and validation, and thin bindings of the DAG helpers to this config.
# Imports agfsync.core only (no torch): `snakemake -n` must stay fast on a machine without
# GPU, weights or network. The logic lives in agfsync.core.dag (unit-tested: tests/test_dag.py),
# every path in agfsync.core.layout.

import os
import sys

from snakemake.utils import validate

from agfsync.core import dag, layout, runs, sharing
from agfsync.core.benchmarks import VARIANTS, metrics_for
from agfsync.core.benchmarks import enabled as enabled_benchmarks
from agfsync.core.config import REPO_ROOT, SCHEMA_PATH, check_config, check_config_files, config_digest, resolve_config
from agfsync.core.downloads import hub_repos, needed
from agfsync.core.jobs import put_on_pythonpath
from agfsync.core.overrides import for_model
from agfsync.core.rewards import enabled_rewards, reward_values, uses_endpoint

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
sharing.freeze(config)  # checked and complete: the sharing answers are computed once

# A named run (`run: NAME`) works in its own folder, runs/NAME (agfsync.core.runs), linked to
# the checkout's data/ and resources/. An absolute path: a cluster job that parses this file
# again in that folder lands in the same place. `--directory` wins, as Snakemake wants.
RUN_DIR = runs.run_dir(config, REPO_ROOT)
if RUN_DIR is not None and workflow.overwrite_workdir is None:
    for _name in runs.prepare(RUN_DIR, REPO_ROOT):
        print(f"agfsync: {RUN_DIR / _name} is not a link to {REPO_ROOT / _name}: the run reads its own",
              file=sys.stderr)
    workflow.workdir(str(RUN_DIR))
    # Jobs start where Snakemake started (sbatch -D, the local executor's cd, the SLURM plugin's
    # relative slurm-logdir): make that the run folder too, so that all of the run is in it and
    # `agfsync unlock runs/NAME` finds its SLURM jobs. Jobs parse this file again: they get the
    # runs root as an absolute path (a relative $AGFSYNC_RUNS_DIR would move with them).
    workflow._workdir_init = str(RUN_DIR)
    os.environ[runs.ENV] = str(RUN_DIR.parent)

TINY_MODELS = config["tiny_models"]["dir"]
CONFIG_HASH = config_digest(config)

# Compute jobs never reach the Hugging Face hub (cluster compute nodes often have no
# internet): everything comes from the download rules, which run on the login node and
# switch this off for themselves (agfsync.core.downloads).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
put_on_pythonpath(REPO_ROOT)  # jobs import agfsync from this checkout, --use-conda included
DOWNLOAD_FILES = {entry["path"]: entry for entry in config["downloads"]["files"]}
HUB_REPOS = hub_repos(config)


def needs(*values):
    """The download outputs that provide these config values (agfsync.core.downloads.needed)."""
    return needed(values, DOWNLOAD_FILES, HUB_REPOS)


def model_needs(*keys):
    """Input function: downloads behind models.{model}.<key> values."""
    return lambda w: needs(*(config["models"][w.model][key] for key in keys))


# Shard lists, fixed at parse time: the whole DAG is known to a dry run.
SHARDS = dag.candidate_shards(config)
EVAL_BENCHES = enabled_benchmarks(config)
EVAL_METRICS = metrics_for(config)


wildcard_constraints:
    model="|".join(sorted(config["models"])),
    shard=r"\d{5}",


# ----------------------------------------------------------------------------- bindings of agfsync.core.dag


_PARAMS = {}  # params per declared key tuple: computed once, whatever the number of jobs (paper: ~6000)


def stage_params(rule, wildcards=None):
    """A job's params: the config keys its rule declares (agfsync.core.dag.DECLARED), as its
    model sees them (models.<model>.overrides merged: agfsync.core.overrides)."""
    values = dict(wildcards.items()) if wildcards else {}
    sections = dag.declared(config, rule, **values)
    key = (values.get("model"), sections)
    if key not in _PARAMS:
        _PARAMS[key] = dag.stage_config(for_model(config, values.get("model")), *sections)
    return _PARAMS[key]


def shared_file(stage, model, pattern, **values):
    """`pattern` of the model whose output of `stage` `model` reads: itself, or an earlier run
    model whose output would be the same (agfsync.core.sharing)."""
    return pattern.format(model=sharing.source(config, stage, model), **values)


def candidate_files(model, stage):
    """The candidate shards ("candidates") or their scores ("scores") a model's pairs come from."""
    pattern = {"candidates": layout.CANDIDATE_SHARD, "scores": layout.SCORES_SHARD}[stage]
    return [shared_file(stage, model, pattern, shard=shard) for shard in SHARDS]


def tiny_models_input():
    return dag.tiny_models_input(config)


def llm_inputs(stage):
    return dag.llm_inputs(config, stage)


MODEL_GPUS = dag.model_gpus(config)


def train_resources():
    return dag.train_resources(config)


def final_targets():
    return dag.final_targets(config)


def benchmark_files(w):
    return dag.benchmark_files(config, w.bench)


def eval_unet(w):
    return dag.eval_unet(w.model, w.variant)


def eval_shard(w):
    """The images one per-image job scores: the base model's may be another model's (agfsync.core.sharing)."""
    owner = sharing.eval_source(config, w.model, w.variant, w.bench, "shard")
    return layout.EVAL_SHARD.format(model=owner, variant=w.variant, bench=w.bench, shard=w.shard)


def eval_outputs(model, variant, bench, kind):
    return dag.eval_outputs(config, model, variant, bench, kind)


def metric_inputs(w):
    return dag.metric_inputs(config, w.model, w.metric)


def report_inputs(wildcards=None):
    return dag.report_inputs(config)


# eval_score: its params and downloads per benchmark, computed once (882 jobs on the paper config).
EVAL_SCORE_NEEDS = {b: needs(*dag.eval_score_values(config, b)) for b in EVAL_BENCHES}


def eval_score_cfg(w):
    return stage_params("eval_score", w)


def eval_score_downloads(w):
    dag.check_per_image(w.bench, w.kind, w.ext)
    return EVAL_SCORE_NEEDS[w.bench]


# eval_reward / eval_reward_endpoint: the reward models run here (agfsync.core.rewards).
LOCAL_REWARDS = [r for r in enabled_rewards(config) if not uses_endpoint(config, r)]
ENDPOINT_REWARDS = [r for r in enabled_rewards(config) if uses_endpoint(config, r)]
REWARD_NEEDS = {r: needs(*reward_values(config, r)) for r in enabled_rewards(config)}


def reward_downloads(w):
    dag.check_reward_bench(config, w.reward, w.bench)
    return REWARD_NEEDS[w.reward]


def reward_responses(w):
    dag.check_reward_bench(config, w.reward, w.bench)
    return llm_inputs(f"eval.{w.reward}") if uses_endpoint(config, w.reward) else []
