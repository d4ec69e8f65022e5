"""`agfsync generate` (pure at import, as agfsync.cli): images of the base or the fine-tuned
model as PNGs and a grid, with the evaluation's seeds (agfsync.stages.draw)."""

from __future__ import annotations

from agfsync.core.argtypes import positive_int


def _cmd(args, stage) -> int:
    from pathlib import Path

    from agfsync.core import layout
    from agfsync.core.ids import read_records
    from agfsync.core.io import DataError
    from agfsync.core.runs import outputs_root
    from agfsync.stages import draw

    with stage(args, model_job=True) as (settings, cfg):
        scope, root = "generate", outputs_root(cfg)  # a named run's folder (agfsync.core.runs), else .
        if args.benchmark:
            path = root / layout.EVAL_PROMPTS.format(bench=args.benchmark)
            if not path.is_file():
                raise DataError(f"{path}: no prompt list of the {args.benchmark} benchmark here; make it with "
                                f"`snakemake {layout.EVAL_PROMPTS.format(bench=args.benchmark)} --configfile "
                                f"{args.config}`")
            records, scope = read_records(path, required=("id", "prompt", "group")), args.benchmark
        elif args.prompts:
            records = draw.file_records(args.prompts)
        else:
            records = draw.prompt_records(args.prompt)
        records = records[: args.max_prompts] if args.max_prompts else records
        trained = args.unet or str(root / layout.TRAINED.format(model=args.model))
        variants = {v: None if v == "base" else f"{trained}/unet" for v in dict.fromkeys(args.variant or ["base"])}
        written = draw.draw(settings, args.model, records, args.out, variants=variants, scope=scope,
                            per_prompt=args.n)
    count = sum(len(rows) for rows in written.values())
    print(f"agfsync generate: {count} images in {args.out}/{{{','.join(written)}}}/, the grid in {args.out}/grid.png")
    return 0


def add_parser(sub, stage) -> None:
    """The `generate` command; `stage` is agfsync.cli's settings-and-logging context."""
    p = sub.add_parser("generate", help="images of the base or fine-tuned model for prompts or a benchmark (PNGs, grid)",
                       description="Draw images with the evaluation's sampler, seeds and batches: for --benchmark "
                       "NAME with --n 1 the images are the evaluation's, bit for bit (with --n N the first image is "
                       "the same draw, up to the last bits of larger batches). Writes "
                       "OUT/<variant>/<prompt id>-<k>.png, OUT/<variant>/images.jsonl (prompt, seeds, file) and "
                       "OUT/grid.png (a row per prompt, the variants side by side).")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--model", required=True, help="model name under 'models' (e.g. sdxl)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    source.add_argument("--prompts", help="a prompts file: JSONL records with 'prompt' (and 'id'), or one prompt per line")
    source.add_argument("--benchmark", choices=("tifa", "hpsv2", "mjhq"),
                        help="an evaluation benchmark's prompt list (results/eval/NAME/prompts.jsonl)")
    p.add_argument("--variant", action="append", choices=("base", "agfsync"),
                   help="base (default) or agfsync, the fine-tuned UNet; repeat for both, side by side in the grid")
    p.add_argument("--unet", help="the fine-tuned model folder (default: results/MODEL/agfsync, the training's output)")
    p.add_argument("--n", type=positive_int, default=1, help="images per prompt (default 1)")
    p.add_argument("--max-prompts", type=positive_int, help="only the first N prompts")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=lambda args: _cmd(args, stage))
