"""The `agfsync` command: each workflow step runnable by hand, outside Snakemake.

  agfsync check-config CONFIG              validate a config, print it with defaults filled
  agfsync tiny-models OUTDIR               build the tiny offline models
  agfsync prompts --config C --out P ...   stage 1a: LLM-written prompts
  agfsync qa --config C --prompts P ...    stage 1b: TIFA-style QA pairs
  agfsync candidates --config C --model M  stage 2: candidate images of one shard
  agfsync score --config C --shard S ...   stage 3: AI-feedback scores of one shard
  agfsync pairs --config C --scores ...    stage 4: preference pairs

`agfsync COMMAND --help` describes each. Exit status 2 on bad config or input, with a
message naming the file and key; 1 on a failed job (the log has the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys

from agfsync import __version__


from agfsync.config import ConfigError  # noqa: E402  (pure module: cheap)


def _cmd_check_config(args) -> int:
    import yaml

    from agfsync.config import load_config

    cfg = load_config(args.config)
    if not args.quiet:
        yaml.safe_dump(cfg, sys.stdout, sort_keys=False)
    return 0


def _cmd_tiny_models(args) -> int:
    from agfsync.logs import job_logging
    from agfsync.tiny_models import build_all

    with job_logging(args.log):
        manifest = build_all(args.outdir, families=args.families)
    for family, info in manifest["families"].items():
        print(f"{family:10s} {len(info['files']):3d} files {info['bytes'] / 1e6:7.2f} MB")
    return 0


def _cmd_prompts(args) -> int:
    from agfsync.config import load_config
    from agfsync.logs import job_logging, secret_env_names
    from agfsync.prompts import write_prompts

    cfg = load_config(args.config)
    with job_logging(args.log, secret_env_names(cfg)):
        write_prompts(cfg, args.out, args.summary)
    return 0


def _cmd_qa(args) -> int:
    from agfsync.config import load_config
    from agfsync.logs import job_logging, secret_env_names
    from agfsync.qa import write_qa

    cfg = load_config(args.config)
    with job_logging(args.log, secret_env_names(cfg)):
        write_qa(cfg, args.prompts, args.out, args.summary)
    return 0


def _cmd_candidates(args) -> int:
    from agfsync.candidates import generate_shard
    from agfsync.config import load_config
    from agfsync.ids import read_records
    from agfsync.logs import job_logging
    from agfsync.shards import shard_records

    cfg = load_config(args.config)
    if args.model not in cfg["models"]:
        raise ConfigError(f"{args.config}: --model {args.model!r} is not defined under 'models'")
    with job_logging(args.log):
        records = shard_records(read_records(args.qa, required=("id", "prompt")), args.shard,
                                cfg["candidates"]["shard_size"], source=args.qa)
        generate_shard(cfg, args.model, records, args.out)
    return 0


def _cmd_score(args) -> int:
    from agfsync.config import load_config
    from agfsync.logs import job_logging
    from agfsync.scoring import score_shard

    cfg = load_config(args.config)
    with job_logging(args.log):
        score_shard(cfg, args.shard, args.qa, args.out)
    return 0


def _cmd_pairs(args) -> int:
    from agfsync.config import load_config
    from agfsync.logs import job_logging
    from agfsync.pairs import select_pairs

    cfg = load_config(args.config)
    if len(args.scores) != len(args.shards):
        raise ConfigError("--scores and --shards must name the same number of files, in the same order")
    with job_logging(args.log):
        select_pairs(cfg, args.scores, args.qa, args.shards, args.out, args.summary)
    return 0


def _cmd_download(args) -> int:
    from agfsync.downloads import download_file
    from agfsync.logs import job_logging

    with job_logging(args.log):
        info = download_file(args.url, args.out, sha256=args.sha256)
    print(json.dumps(info))
    return 0


def _cmd_metric(args) -> int:
    from agfsync.config import config_digest, load_config
    from agfsync.logs import job_logging
    from agfsync.results import write_metric

    cfg = load_config(args.config)
    inputs = {"base": args.base, "agfsync": args.agfsync}
    if args.metric == "mjhq_fid":
        if not args.reference:
            raise ConfigError("metric mjhq_fid needs --reference (the reference features .npz)")
        inputs["reference"] = args.reference
    if args.model not in cfg["models"]:
        raise ConfigError(f"--model {args.model!r} is not defined under 'models' in {args.config}")
    with job_logging(args.log):
        write_metric(cfg, args.model, args.metric, inputs, args.out, config_digest(cfg, args.model))
    return 0


def _cmd_report(args) -> int:
    from agfsync.config import config_digest, load_config
    from agfsync.logs import job_logging
    from agfsync.report import build_report

    cfg = load_config(args.config)
    with job_logging(args.log):
        build_report(cfg, args.out, root=args.results, config_hash=config_digest(cfg))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agfsync",
        description="AGFSync preference tuning for text-to-image diffusion models: the steps of the Snakemake "
        "workflow (workflow/Snakefile), runnable one at a time.",
    )
    parser.add_argument("--version", action="version", version=f"agfsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check-config", help="validate a config file and print it with defaults filled in",
                       description="Validate CONFIG against the agfsync schema; print the config with defaults.")
    p.add_argument("config", help="YAML config file, e.g. config/config.yaml")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when the config is valid")
    p.set_defaults(func=_cmd_check_config)

    from agfsync.tiny_models import FAMILIES  # imports no torch, so --help stays fast

    p = sub.add_parser("tiny-models", help="build tiny random-initialised models for offline runs",
                       description="Build deterministic tiny versions of every model family agfsync loads "
                       "(SD 1.x, SDXL, CLIP, BLIP-2, aesthetic predictor, HPS) into OUTDIR, in the on-disk "
                       "formats of the real checkpoints. No network access.")
    p.add_argument("outdir", help="output directory (replaced)")
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="subset to build")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_cmd_tiny_models)

    p = sub.add_parser("prompts", help="stage 1a: an LLM writes image prompts over 12 categories",
                       description="Ask the LLM of prompts.llm for image descriptions per category, drop exact "
                       "and near duplicates, write JSONL prompts and a JSON summary.")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--out", required=True, help="output prompts JSONL")
    p.add_argument("--summary", required=True, help="output summary JSON")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_cmd_prompts)

    p = sub.add_parser("qa", help="stage 1b: an LLM writes TIFA-style question/answer pairs per prompt",
                       description="Ask the LLM of qa.llm for question/answer pairs for each prompt, validate "
                       "them, drop prompts with fewer than qa.min_pairs, write JSONL and a JSON summary.")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--prompts", required=True, help="input prompts JSONL (from `agfsync prompts`)")
    p.add_argument("--out", required=True, help="output JSONL: prompts with their QA pairs")
    p.add_argument("--summary", required=True, help="output summary JSON")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_cmd_qa)

    p = sub.add_parser("candidates", help="stage 2: N candidate images per prompt for one shard",
                       description="Draw candidates.num_per_prompt images for each prompt of shard SHARD of the QA "
                       "file with model MODEL, noise on the text embedding, and write one shard tar.")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--model", required=True, help="model name under 'models' (e.g. sdxl)")
    p.add_argument("--qa", required=True, help="prompts with QA pairs (JSONL from `agfsync qa`)")
    p.add_argument("--shard", type=int, required=True, help="shard index (prompts SHARD*shard_size onwards)")
    p.add_argument("--out", required=True, help="output shard .tar")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_cmd_candidates)

    p = sub.add_parser("score", help="stage 3: VQA, CLIP and aesthetic scores of one shard",
                       description="Score every image of a candidate shard and write one JSONL row per image.")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--shard", required=True, help="candidate shard .tar")
    p.add_argument("--qa", required=True, help="prompts with QA pairs (JSONL)")
    p.add_argument("--out", required=True, help="output scores JSONL")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("pairs", help="stage 4: best vs worst candidate of each prompt",
                       description="Gather the scores of every shard and write one preference pair per prompt.")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--scores", nargs="+", required=True, help="scores JSONL of each shard")
    p.add_argument("--shards", nargs="+", required=True, help="the matching shard .tar files, same order")
    p.add_argument("--qa", required=True, help="prompts with QA pairs (JSONL)")
    p.add_argument("--out", required=True, help="output pairs JSONL")
    p.add_argument("--summary", required=True, help="output summary JSON")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_cmd_pairs)

    p = sub.add_parser("download", help="fetch one file, resumable, verified against a recorded SHA-256",
                       description="Download URL to OUT: resumes OUT.part with a Range request, checks --sha256 or "
                       "the checksum recorded in OUT.sha256 by the first download (rule download_file).")
    p.add_argument("url", help="http(s) or file URL")
    p.add_argument("out", help="destination file")
    p.add_argument("--sha256", help="expected SHA-256 (hex); else recorded on first download")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_cmd_download)

    from agfsync.results import METRICS  # pure module

    p = sub.add_parser("metric", help="stage 6: results/{model}/{metric}.json from per-image score files",
                       description="Aggregate the per-shard score (or FID feature) files of both variants into "
                       "one result file (rule eval_metric). The VLM judge has its own rule (eval_judge).")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--model", required=True, help="model name under 'models'")
    p.add_argument("--metric", required=True, choices=[m for m in METRICS if m != "judge"])
    p.add_argument("--base", nargs="+", required=True, help="per-shard files of the base images")
    p.add_argument("--agfsync", nargs="+", required=True, help="per-shard files of the AGFSync images")
    p.add_argument("--reference", help="mjhq_fid: reference features .npz")
    p.add_argument("--out", required=True, help="output result JSON")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_cmd_metric)

    p = sub.add_parser("report", help="stage 6: the self-contained HTML report of a finished run",
                       description="Build the report from RESULTS (result files, training metrics, pairs, shards).")
    p.add_argument("--config", required=True, help="YAML config file of the run")
    p.add_argument("--results", default="results", help="the run's results directory (default: results)")
    p.add_argument("--out", required=True, help="output HTML file")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("unlock", help="after Snakemake was killed: remove its stale lock once nothing of that run runs",
                       description="Remove the lock a killed Snakemake left in DIRECTORY/.snakemake/locks (what "
                       "`snakemake --unlock` does), but only when no Snakemake runs in DIRECTORY on this host and "
                       "none of your SLURM jobs started from DIRECTORY is pending or running; otherwise name them "
                       "and exit 1.")
    p.add_argument("directory", nargs="?", default=".", help="the workflow's working directory (default: .)")
    p.set_defaults(func=_cmd_unlock)
    return parser


def _cmd_unlock(args) -> int:
    from agfsync.unlock import main as unlock

    return unlock(args.directory)


def main(argv: list[str] | None = None) -> int:
    from agfsync.io import DataError
    from agfsync.llm import LLMError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError) as err:
        print(f"agfsync {args.command}: error: {err}", file=sys.stderr)
        return 2
    except LLMError as err:
        print(f"agfsync {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
