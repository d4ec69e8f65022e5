"""`agfsync export-pairs` (pure at import, as agfsync.cli): the preference pairs of stage 4 as a
Hugging Face dataset folder, parquet with the images (agfsync.stages.export_pairs)."""

from __future__ import annotations

import argparse

from agfsync.core.argtypes import positive_int


def _cmd(args, stage) -> int:
    from pathlib import Path

    from agfsync.core import layout
    from agfsync.core.config import config_digest
    from agfsync.core.runs import outputs_root
    from agfsync.stages.export_pairs import DATASET, export_pairs

    with stage(args, model_job=False) as (settings, cfg):
        from agfsync.core.sharing import source  # a variant's pairs and candidates may be another model's

        root = outputs_root(cfg)  # a named run's folder (agfsync.core.runs), else .
        pairs = args.pairs or str(root / layout.PAIRS.format(model=source(cfg, "pairs", args.model)))
        candidates = args.candidates or str(root / Path(layout.CANDIDATE_SHARD.format(
            model=source(cfg, "candidates", args.model), shard="0")).parent)
        qa = args.qa if args.qa is not None else (str(root / layout.QA) if (root / layout.QA).is_file() else None)
        out = args.out or str(root / DATASET.format(model=args.model))
        summary = export_pairs(pairs, candidates, out, model=args.model, prompts_qa_path=qa or None,
                               shard_rows=args.shard_rows, config_digest=config_digest(cfg, args.model),
                               seed=settings.seed, overwrite=args.overwrite)
    print(f"agfsync export-pairs: {summary['rows']} pairs in {len(summary['files'])} parquet file(s) under {out}/data/; "
          f"load with datasets.load_dataset(\"parquet\", data_dir=\"{out}\", split=\"train\")")
    return 0


def add_parser(sub, stage) -> None:
    """The `export-pairs` command; `stage` is agfsync.cli's settings-and-logging context."""
    p = sub.add_parser(
        "export-pairs", help="the preference pairs as a Hugging Face dataset (parquet with the images, a dataset card)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Write the pairs of results/MODEL/pairs.jsonl, with the winner's and loser's images read from
the candidate shards, as a Hugging Face dataset folder (default results/MODEL/pairs_dataset):
  OUT/data/train-00000-of-0000N.parquet  --shard-rows pairs per file
  OUT/README.md                          dataset card (configs and features in its YAML front matter)
  OUT/export.json                        counts, sources (sha256 of pairs.jsonl), config digest, version
Columns as Pick-a-Pic v2 / Diffusion-DPO: caption (the prompt), jpg_0, jpg_1 (Image features: PNG bytes
and a path), label_0 (1.0 when jpg_0 is the winner; the order is drawn per pair, so both occur), label_1;
and prompt_id, category, model, margin, winner_/loser_ candidate, seed, vqa, clip, aesthetic, total
(and qa, the questions, with the QA file). The folder is built next to OUT and renamed into place; an
existing OUT is refused without --overwrite.

Load it (pip install datasets):
  from datasets import load_dataset
  ds = load_dataset("parquet", data_dir="results/MODEL/pairs_dataset", split="train")
  ds = load_dataset("results/MODEL/pairs_dataset", split="train")   # reads the card's configs
Publish it: ds.push_to_hub("user/name"), or upload the folder with its card as is:
  hf upload user/name results/MODEL/pairs_dataset . --repo-type dataset""")
    p.add_argument("--config", required=True, help="YAML config file (seed: the pairs' order; the config digest)")
    p.add_argument("--model", required=True, help="model name under 'models' (e.g. sdxl)")
    p.add_argument("--pairs", help="pairs JSONL (default: results/MODEL/pairs.jsonl)")
    p.add_argument("--candidates", help="folder of the candidate shards the pairs name, looked up by file name "
                   "(default: results/MODEL/candidates)")
    p.add_argument("--qa", help="prompts with QA pairs, for the qa column (default: results/prompts/qa.jsonl when it "
                   "exists; '' for none)")
    p.add_argument("--out", help="output dataset folder (default: results/MODEL/pairs_dataset)")
    p.add_argument("--shard-rows", type=positive_int, default=500, help="pairs per parquet file (default 500)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=lambda args: _cmd(args, stage))
