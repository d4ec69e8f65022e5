"""The `agfsync` command: each workflow step runnable by hand, outside Snakemake.

  agfsync check-config CONFIG                      validate a config, print it with defaults filled
  agfsync tiny-models OUTDIR                       build the tiny offline models
  agfsync prompts --config C --out P ...           stage 1a: LLM-written prompts
  agfsync qa --config C --prompts P ...            stage 1b: TIFA-style QA pairs
  agfsync candidates --config C --model M ...      stage 2: candidate images of one shard
  agfsync score --config C --shard S ...           stage 3: AI-feedback scores of one shard
  agfsync pairs --config C --scores ...            stage 4: preference pairs
  agfsync train-cache --config C --model M ...     stage 5: latents and text embeddings of the pairs
  agfsync train --config C --model M ...           stage 5: Diffusion-DPO training
  agfsync eval-prompts --config C --bench B ...    stage 6: a benchmark's prompt list
  agfsync eval-generate --config C --model M ...   stage 6: one shard of evaluation images
  agfsync eval-score --config C --bench B ...      stage 6: per-image scores or FID features of a shard
  agfsync eval-reference --config C ...            stage 6: FID features of the MJHQ reference images
  agfsync metric --config C --metric X ...         stage 6: a result file from per-image files
  agfsync judge --config C --model M ...           stage 6: the VLM judge's result file
  agfsync report --config C --out R                the HTML report of a finished run

Each stage command calls the same `run()` as the workflow rule's script (agfsync.stages.*),
with the whole config's settings: they cannot drift apart; model stages set torch's threads
from `cpu_threads` as the workflow's jobs do, so their outputs are the same bytes.

`agfsync COMMAND --help` describes each. Exit status 2 on bad config or input (the message
names the file and key); 1 on a failed job (the log has the traceback)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys

from agfsync import __version__
from agfsync.core.config import ConfigError  # pure module: cheap
from agfsync.generate_cli import add_parser as add_generate_parser  # pure at import, as this file
from agfsync.maintenance_cli import add_parsers as add_maintenance_parsers  # pure at import, as this file
from agfsync.export_cli import add_parser as add_export_parser  # pure at import, as this file (and the next two)
from agfsync.plan_cli import add_parser as add_plan_parser
from agfsync.reward_cli import add_parser as add_reward_parser
from agfsync.world.cli import add_parser as add_world_parser  # pure at import, as this file

@contextlib.contextmanager
def _stage(args, *, model_job: bool = False):
    """args.config's settings for a stage command, logging to args.log (keys masked); model jobs set CPU threads."""
    from agfsync.core.config import load_config
    from agfsync.core.logs import job_logging, secret_env_names
    from agfsync.core.overrides import for_model
    from agfsync.core.sections import Settings
    from agfsync.llm.providers import register_local_server
    from agfsync.world.writer import WorldWriter

    register_local_server("world", WorldWriter)  # LLM provider `world` (agfsync.llm may not import world)
    cfg = load_config(args.config)
    model = getattr(args, "model", None)
    if model is not None and model not in cfg["models"]:
        raise ConfigError(f"{args.config}: --model {model!r} is not defined under 'models' "
                          f"(defined: {', '.join(cfg['models'])})")
    settings = Settings.from_dict(for_model(cfg, model))  # its overrides merged (agfsync.core.overrides)
    with job_logging(args.log, secret_env_names(cfg)):
        if model_job:
            from agfsync.core.jobs import set_cpu_threads

            set_cpu_threads(settings.cpu_threads)
        yield settings, cfg


def _cmd_check_config(args) -> int:
    import yaml
    from agfsync.core.config import load_config

    cfg = load_config(args.config)
    if not args.quiet:
        yaml.safe_dump(cfg, sys.stdout, sort_keys=False)
    return 0


def _cmd_tiny_models(args) -> int:
    from agfsync.core.logs import job_logging
    from agfsync.demo.tiny_models import build_all

    with job_logging(args.log):
        manifest = build_all(args.outdir, families=args.families)
    for family, info in manifest["families"].items():
        print(f"{family:10s} {len(info['files']):3d} files {info['bytes'] / 1e6:7.2f} MB")
    return 0


def _stage_command(module: str, entry: str, files, *, model_job: bool = False, check=None):
    """A command running agfsync.stages.<module>.<entry>(settings, inputs, outputs, **wildcards) as
    the rule's script does (imported when it runs: `--help` imports no torch); files(args, cfg)
    -> (inputs, outputs, wildcards) from the options."""

    def command(args) -> int:
        if check is not None:
            check(args)
        with _stage(args, model_job=model_job) as (settings, cfg):
            inputs, outputs, wildcards = files(args, cfg)
            run = getattr(importlib.import_module(f"agfsync.stages.{module}"), entry)
            run(settings, inputs, outputs, **wildcards)
        return 0

    return command


def _same_count(args) -> None:
    if len(args.scores) != len(args.shards):
        raise ConfigError("--scores and --shards must name the same number of files, in the same order")


def _unet_for_agfsync(args) -> None:
    if (args.variant == "agfsync") != (args.unet is not None):
        raise ConfigError("--unet (the fine-tuned model directory, results/{model}/agfsync) is given exactly for "
                          "--variant agfsync")


def _reference_for_fid(args) -> None:
    if args.metric == "mjhq_fid" and not args.reference:
        raise ConfigError("metric mjhq_fid needs --reference (the reference features .npz)")


def _digest(args, cfg) -> str:
    from agfsync.core.config import config_digest

    return config_digest(cfg, args.model)


_prompts = _stage_command("prompts", "run", lambda a, c: ({}, {"prompts": a.out, "summary": a.summary}, {}))
_qa = _stage_command("qa", "run", lambda a, c: ({"prompts": a.prompts}, {"qa": a.out, "summary": a.summary}, {}))
_candidates = _stage_command("candidates", "run", lambda a, c: (
    {"qa": a.qa}, {"shard": a.out}, {"model": a.model, "shard": a.shard}), model_job=True)
_score = _stage_command("scoring", "run", lambda a, c: ({"shard": a.shard, "qa": a.qa}, {"scores": a.out}, {}),
                        model_job=True)
_pairs = _stage_command("pairs", "run", lambda a, c: (
    {"scores": a.scores, "shards": a.shards, "qa": a.qa}, {"pairs": a.out, "summary": a.summary}, {}),
    check=_same_count)
_train_cache = _stage_command("train", "run_cache", lambda a, c: (
    {"pairs": a.pairs}, {"cache": a.out}, {"model": a.model}), model_job=True)
# no model_job: each training process sets its own threads (agfsync.train.launch)
_train = _stage_command("train", "run", lambda a, c: (
    {"cache": a.cache}, {"model": a.out}, {"model": a.model, "checkpoints": a.checkpoints, "log": a.log,
                                           "config_digest": _digest(a, c)}))
_eval_prompts = _stage_command("evaluate", "run_prompts", lambda a, c: ({}, {"prompts": a.out}, {"bench": a.bench}))
_eval_generate = _stage_command("evaluate", "run_generate", lambda a, c: (
    {"prompts": a.prompts, "unet": [a.unet] if a.unet else []}, {"shard": a.out},
    {"model": a.model, "variant": a.variant, "bench": a.bench, "shard": a.shard}),
    model_job=True, check=_unet_for_agfsync)
_eval_score = _stage_command("evaluate", "run_score", lambda a, c: (  # gold: eval.tifa.gold's answerer (stages may
    {"shard": a.shard, "prompts": a.prompts}, {"scores": a.out, "features": a.out},  # not import agfsync.world)
    {"bench": a.bench, "gold": importlib.import_module("agfsync.world.oracle").answer}), model_job=True)
_eval_reward = _stage_command("rewards", "run", lambda a, c: (
    {"shard": a.shard, "prompts": a.prompts}, {"scores": a.out}, {"reward": a.reward, "bench": a.bench}), model_job=True)
_eval_reference = _stage_command("evaluate", "run_reference", lambda a, c: (
    {"prompts": a.prompts}, {"features": a.out}, {}), model_job=True)
_metric = _stage_command("metrics", "run", lambda a, c: (
    {"base": a.base, "agfsync": a.agfsync, **({"reference": a.reference} if a.reference else {})}, {"result": a.out},
    {"model": a.model, "metric": a.metric, "config_hash": _digest(a, c)}), check=_reference_for_fid)
_judge = _stage_command("judge", "run", lambda a, c: (
    {"base": a.base, "agfsync": a.agfsync, "prompts": a.prompts}, {"result": a.out},
    {"model": a.model, "config_hash": _digest(a, c)}))


def _cmd_download(args) -> int:
    from agfsync.core.downloads import download_file
    from agfsync.core.logs import job_logging

    with job_logging(args.log):
        info = download_file(args.url, args.out, sha256=args.sha256)
    print(json.dumps(info))
    return 0


def _cmd_report(args) -> int:
    from pathlib import Path

    from agfsync.core.config import config_digest, load_config
    from agfsync.core.dag import job_gpus, report_paths
    from agfsync.core.downloads import hub_repos
    from agfsync.core.logs import job_logging
    from agfsync.core.runs import results_dir
    from agfsync.core.sections import Settings
    from agfsync.report.page import build_report, rebased

    cfg = load_config(args.config)
    results = args.results or results_dir(cfg)  # a named run's (agfsync.core.runs), else ./results
    with job_logging(args.log):  # root: where the run's benchmarks/ and resources/ are, beside its results
        paths = {model: rebased(files, results) for model, files in report_paths(cfg).items()}
        build_report(Settings.from_dict(cfg), args.out, paths, config_hash=config_digest(cfg), tsv=args.tsv,
                     hub=hub_repos(cfg), gpus=job_gpus(cfg), root=Path(results).parent)
    return 0


def _stage_parser(sub, name: str, help: str, description: str, func, *, model: bool = False):
    """A stage command's parser with --config (and --model); the caller adds the rest, then --log."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("--config", required=True, help="YAML config file")
    if model:
        p.add_argument("--model", required=True, help="model name under 'models' (e.g. sdxl)")
    p.set_defaults(func=func)
    return p


def _log(p) -> None:
    p.add_argument("--log", help="also write the log to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agfsync", description="AGFSync preference tuning for text-to-image "
                                     "diffusion models: the steps of the Snakemake workflow (workflow/Snakefile), "
                                     "runnable one at a time.")
    parser.add_argument("--version", action="version", version=f"agfsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check-config", help="validate a config file and print it with defaults filled in",
                       description="Validate CONFIG against the agfsync schema; print the config with defaults.")
    p.add_argument("config", help="YAML config file, e.g. config/config.yaml")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when the config is valid")
    p.set_defaults(func=_cmd_check_config)

    from agfsync.core.dag import TINY_FAMILIES as FAMILIES  # pure, so --help stays fast

    p = sub.add_parser("tiny-models", help="build tiny random-initialised models for offline runs",
                       description="Build deterministic tiny versions of every model family agfsync loads "
                       "(SD 1.x, SDXL, CLIP, BLIP-2, aesthetic predictor, HPS) into OUTDIR, in the on-disk "
                       "formats of the real checkpoints. No network access.")
    p.add_argument("outdir", help="output directory (replaced)")
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="subset to build")
    _log(p)
    p.set_defaults(func=_cmd_tiny_models)
    add_world_parser(sub)  # agfsync world build|check
    # ------------------------------------------------------------------ stage 1

    p = _stage_parser(sub, "prompts", "stage 1a: an LLM writes image prompts over 12 categories",
                      "Ask the LLM of prompts.llm for image descriptions per category, drop exact and near "
                      "duplicates, write JSONL prompts and a JSON summary (rule prompts_generate).", _prompts)
    p.add_argument("--out", required=True, help="output prompts JSONL")
    p.add_argument("--summary", required=True, help="output summary JSON")
    _log(p)

    p = _stage_parser(sub, "qa", "stage 1b: an LLM writes TIFA-style question/answer pairs per prompt",
                      "Ask the LLM of qa.llm for question/answer pairs for each prompt, validate them, drop "
                      "prompts with fewer than qa.min_pairs, write JSONL and a JSON summary (rule qa_generate).", _qa)
    p.add_argument("--prompts", required=True, help="input prompts JSONL (from `agfsync prompts`)")
    p.add_argument("--out", required=True, help="output JSONL: prompts with their QA pairs")
    p.add_argument("--summary", required=True, help="output summary JSON")
    _log(p)

    # ------------------------------------------------------------------ stages 2-4

    p = _stage_parser(sub, "candidates", "stage 2: N candidate images per prompt for one shard",
                      "Draw candidates.num_per_prompt images for each prompt of shard SHARD of the QA file with "
                      "model MODEL, noise on the text embedding, and write one shard tar (rule "
                      "candidates_generate).", _candidates, model=True)
    p.add_argument("--qa", required=True, help="prompts with QA pairs (JSONL from `agfsync qa`)")
    p.add_argument("--shard", type=int, required=True, help="shard index (prompts SHARD*shard_size onwards)")
    p.add_argument("--out", required=True, help="output shard .tar")
    _log(p)

    p = _stage_parser(sub, "score", "stage 3: VQA, CLIP and aesthetic scores of one shard",
                      "Score every image of a candidate shard and write one JSONL row per image (rule "
                      "candidates_score).", _score)
    p.add_argument("--shard", required=True, help="candidate shard .tar")
    p.add_argument("--qa", required=True, help="prompts with QA pairs (JSONL)")
    p.add_argument("--out", required=True, help="output scores JSONL")
    _log(p)

    p = _stage_parser(sub, "pairs", "stage 4: best vs worst candidate of each prompt",
                      "Gather the scores of every shard, weight them (scores.weights) and write one preference "
                      "pair per prompt (rule pairs_select).", _pairs)
    p.add_argument("--scores", nargs="+", required=True, help="scores JSONL of each shard")
    p.add_argument("--shards", nargs="+", required=True, help="the matching shard .tar files, same order")
    p.add_argument("--qa", required=True, help="prompts with QA pairs (JSONL)")
    p.add_argument("--out", required=True, help="output pairs JSONL")
    p.add_argument("--summary", required=True, help="output summary JSON")
    _log(p)

    # ------------------------------------------------------------------ stage 5

    p = _stage_parser(sub, "train-cache", "stage 5: latents and text embeddings of every pair, once",
                      "Encode the prompts of the pairs and gather the winner's and loser's latents (kept at "
                      "generation, or the VAE encoding of the images: train.latents) into a cache directory "
                      "(rule train_cache). The shards the pairs name are read where the pairs say.",
                      _train_cache, model=True)
    p.add_argument("--pairs", required=True, help="pairs JSONL (from `agfsync pairs`)")
    p.add_argument("--out", required=True, help="output cache directory")
    _log(p)

    p = _stage_parser(sub, "train", "stage 5: Diffusion-DPO training of the UNet",
                      "Train MODEL's UNet on a pair cache with torchrun (train.gpus processes; several nodes "
                      "through srun: train.nodes), checkpointing into CHECKPOINTS so that a rerun resumes, and "
                      "write the fine-tuned model directory (rule train_dpo).", _train, model=True)
    p.add_argument("--cache", required=True, help="pair cache directory (from `agfsync train-cache`)")
    p.add_argument("--out", required=True, help="output directory of the fine-tuned model (unet/, metrics)")
    p.add_argument("--checkpoints", required=True, help="checkpoint directory (kept; a rerun resumes from it)")
    p.add_argument("--log", help="also write the log (and torchrun's output) to this file")

    # ------------------------------------------------------------------ stage 6

    from agfsync.core.benchmarks import BENCHMARKS, METRICS  # pure module: --help imports no torch

    p = _stage_parser(sub, "eval-prompts", "stage 6: a benchmark's prompt list, in its fixed order",
                      "Read the benchmark files that eval.BENCH names and write its prompt records (id, prompt, "
                      "group) as JSONL (rule eval_prompts).", _eval_prompts)
    p.add_argument("--bench", required=True, choices=BENCHMARKS, help="the benchmark")
    p.add_argument("--out", required=True, help="output prompts JSONL")
    _log(p)

    p = _stage_parser(sub, "eval-generate", "stage 6: one shard of evaluation images (base or fine-tuned)",
                      "One image per prompt of shard SHARD (eval.shard_size prompts) of a benchmark's prompt "
                      "list, no embedding noise, the same seeds for both variants; the agfsync variant loads the "
                      "fine-tuned UNet (rule eval_generate).", _eval_generate, model=True)
    p.add_argument("--bench", required=True, choices=BENCHMARKS, help="the benchmark (seeds derive from it)")
    p.add_argument("--variant", required=True, choices=("base", "agfsync"), help="pretrained or fine-tuned UNet")
    p.add_argument("--prompts", required=True, help="the benchmark's prompts JSONL (from `agfsync eval-prompts`)")
    p.add_argument("--shard", type=int, required=True, help="shard index (prompts SHARD*eval.shard_size onwards)")
    p.add_argument("--unet", help="--variant agfsync: the fine-tuned model directory (from `agfsync train`)")
    p.add_argument("--out", required=True, help="output shard .tar")
    _log(p)

    p = _stage_parser(sub, "eval-score", "stage 6: per-image scores (tifa, hpsv2) or FID features (mjhq) of a shard",
                      "Score every image of an evaluation shard: TIFA questions, the stage-3 scores (tifa, scores.*; "
                      "the world's oracle too with eval.tifa.gold), the HPS v2 score (hpsv2, eval.hpsv2), or FID "
                      "features (mjhq, eval.mjhq) (rule eval_score).", _eval_score)
    p.add_argument("--bench", required=True, choices=BENCHMARKS, help="the benchmark of the shard")
    p.add_argument("--shard", required=True, help="evaluation shard .tar (from `agfsync eval-generate`)")
    p.add_argument("--prompts", required=True, help="the benchmark's prompts JSONL")
    p.add_argument("--out", required=True, help="output scores JSONL (tifa, hpsv2) or features .npz (mjhq)")
    _log(p)
    add_reward_parser(sub, _stage_parser, _eval_reward, _log)

    p = _stage_parser(sub, "eval-reference", "stage 6: FID features of the MJHQ-30K reference images",
                      "Extract the FID features (eval.mjhq.features) of the reference image of every MJHQ prompt, "
                      "read from eval.mjhq.images (rule eval_reference_mjhq).", _eval_reference)
    p.add_argument("--prompts", required=True, help="the MJHQ prompts JSONL (from `agfsync eval-prompts --bench mjhq`)")
    p.add_argument("--out", required=True, help="output features .npz")
    _log(p)

    p = _stage_parser(sub, "metric", "stage 6: results/{model}/{metric}.json from per-image score files",
                      "Aggregate the per-shard score (or FID feature) files of both variants into one result file "
                      "(rule eval_metric). The VLM judge has its own command (`agfsync judge`).", _metric, model=True)
    p.add_argument("--metric", required=True, choices=[m for m in METRICS if m != "judge"])
    p.add_argument("--base", nargs="+", required=True, help="per-shard files of the base images")
    p.add_argument("--agfsync", nargs="+", required=True, help="per-shard files of the AGFSync images")
    p.add_argument("--reference", help="mjhq_fid: reference features .npz")
    p.add_argument("--out", required=True, help="output result JSON")
    _log(p)

    p = _stage_parser(sub, "judge", "stage 6: the VLM judge compares base and AGFSync images",
                      "Ask the vision endpoint of eval.judge.llm which of the two images of each prompt (same "
                      "seed) is better, for eval.judge.max_pairs prompts of eval.judge.benchmark, and write the "
                      "win / tie / loss rates (rule eval_judge).", _judge, model=True)
    p.add_argument("--base", nargs="+", required=True, help="image shards of the base model")
    p.add_argument("--agfsync", nargs="+", required=True, help="image shards of the fine-tuned model")
    p.add_argument("--prompts", required=True, help="the judged benchmark's prompts JSONL")
    p.add_argument("--out", required=True, help="output result JSON")
    _log(p)

    p = sub.add_parser("report", help="the self-contained HTML report of a finished run",
                       description="Build the report from RESULTS (result files, training metrics, pairs, shards).")
    p.add_argument("--config", required=True, help="YAML config file of the run")
    p.add_argument("--results", help="the run's results directory (default: results; runs/NAME/results for run: NAME)")
    p.add_argument("--out", required=True, help="output HTML file")
    p.add_argument("--tsv", help="also write every number of the result files here (results/metrics.tsv's format)")
    _log(p)
    p.set_defaults(func=_cmd_report)

    # ------------------------------------------------------------------ tools

    p = sub.add_parser("download", help="fetch one file, resumable, verified against a recorded SHA-256",
                       description="Download URL to OUT: resumes OUT.part with a Range request, checks --sha256 or "
                       "the checksum recorded in OUT.sha256 by the first download (rule download_file).")
    p.add_argument("url", help="http(s) or file URL")
    p.add_argument("out", help="destination file")
    p.add_argument("--sha256", help="expected SHA-256 (hex); else recorded on first download")
    _log(p)
    p.set_defaults(func=_cmd_download)

    add_generate_parser(sub, _stage)
    add_export_parser(sub, _stage)
    add_plan_parser(sub)
    add_maintenance_parsers(sub)  # unlock, stale
    return parser


def main(argv: list[str] | None = None) -> int:
    from agfsync.core.io import DataError
    from agfsync.core.settings import SettingsError
    from agfsync.llm.base import LLMError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, SettingsError, DataError, LLMError) as err:  # bad config or input: 2; a failed LLM job: 1
        print(f"agfsync {args.command}: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, LLMError) else 2


if __name__ == "__main__":
    sys.exit(main())
