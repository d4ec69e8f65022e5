"""`agfsync world build|check|benchmark`: the world's command line (added to agfsync's parser)."""

from __future__ import annotations

import json
import logging
import shlex
import sys

from agfsync.world.grammar import CATEGORIES


def _config_seed(path: str | None, seed: int | None) -> int:
    if seed is not None:
        return seed
    if path is None:
        return 0
    from agfsync.core.config import load_config

    return int(load_config(path)["world"]["seed"])


def _build(args) -> int:
    from agfsync.core.logs import job_logging
    from agfsync.world.build import Schedule, build, retrain_blip2, retrain_unet

    if args.blip2_binding and args.unet_from:
        from agfsync.core.io import DataError

        raise DataError("--blip2-binding trains BLIP-2 and --unet-from only the UNet: give one of them")
    schedule = Schedule().with_blip2_binding() if args.blip2_binding else Schedule()
    if args.shorten != 1.0:
        schedule = schedule.shortened(args.shorten)
    seed = _config_seed(args.config, args.seed)
    command = "agfsync world build " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    with job_logging(args.log):
        if args.unet_from:
            manifest = retrain_unet(args.out, args.unet_from, seed=seed, schedule=schedule, command=command.strip())
        elif args.blip2_from:
            manifest = retrain_blip2(args.out, args.blip2_from, seed=seed, schedule=schedule, command=command.strip())
        else:
            manifest = build(args.out, seed=seed, schedule=schedule, command=command.strip())
    logging.getLogger(__name__).info("world build: %d files, %.1f MB, %s s into %s", len(manifest["files"]),
                                     manifest["bytes"] / 1e6, manifest["seconds"], args.out)
    return 0


def _check(args) -> int:
    from agfsync.core.io import write_json
    from agfsync.core.logs import job_logging
    from agfsync.world import check

    with job_logging(args.log):
        result = check.run(args.models, seed=args.seed, prompts=args.prompts, spread_prompts=args.spread_prompts,
                           quality_images=args.quality_images, grid=args.grid)
    print(check.table(result))
    if args.json:
        write_json(args.json, result)
    return 0


def _benchmark(args) -> int:
    from agfsync.world import benchmark

    for path in benchmark.write(args.out, seed=args.seed, n=args.prompts, stream=args.stream,
                                 split=args.split):
        print(path)
    return 0


def add_parser(sub) -> None:
    world = sub.add_parser("world", help="the miniature world: build its trained tiny models, measure them",
                           description="The miniature world (docs/world.md): procedural scenes of the "
                           f"categories {', '.join(CATEGORIES)}, an exact oracle, and tiny models trained on them.")
    cmds = world.add_subparsers(dest="world_command", required=True, metavar="WORLD_COMMAND")

    p = cmds.add_parser("build", help="train the world's models (text-to-image, CLIP, aesthetic head, BLIP-2)",
                        description="Train every world model from the seed, deterministically (a schedule fixed "
                        "in steps), and write them with a MANIFEST.json of sha256 digests into OUT (replaced).")
    p.add_argument("out", help="output directory, e.g. data/world/models")
    p.add_argument("--config", help="YAML config; its world.seed is the seed")
    p.add_argument("--seed", type=int, help="seed (overrides --config; default 0)")
    p.add_argument("--shorten", type=float, default=1.0, help="scale every step count (tests: e.g. 0.01)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--unet-from", metavar="DIR",
                       help="train only the UNet again, on the VAE, text encoder and tokenizer of the finished "
                       "build DIR (its judges copied as they are); OUT may be DIR")
    again.add_argument("--blip2-from", metavar="DIR",
                       help="train only BLIP-2 again, on the CLIP and VAE of the finished build DIR (everything "
                       "else copied as it is); OUT may be DIR")
    p.add_argument("--blip2-binding", action="store_true",
                   help="train BLIP-2 with the binding recipe (patch and slot losses, 3 text encoder layers, 1,800 "
                   "steps; build.BLIP2_BINDING): it reads shapes, sizes and positions better, the shipped judge "
                   "is without it (docs/world.md, Eleventh round)")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_build)

    p = cmds.add_parser("check", help="measure the world: oracle, base model, judges (prints a table)",
                        description="Measure on fresh held-out prompts: oracle accuracy on renders, the base "
                        "model's recognisable rate and gold accuracy, the judges' agreement with the oracle, "
                        "and the spread of 8 candidates.")
    p.add_argument("models", help="directory of `agfsync world build`, e.g. data/world/models")
    p.add_argument("--seed", type=int, default=1, help="seed of the held-out prompts and images (default 1)")
    p.add_argument("--prompts", type=int, default=500, help="held-out prompts, one image each (default 500)")
    p.add_argument("--spread-prompts", type=int, default=100, help="prompts drawn 8 times for candidate_spread")
    p.add_argument("--quality-images", type=int, default=500, help="perturbed renders for the aesthetic check")
    p.add_argument("--json", help="also write the measurements to this JSON file")
    p.add_argument("--grid", help="also write a PNG of 8 renders above the base model's images of their captions")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=_check)

    from agfsync.world.benchmark import DEFAULT, SPLITS

    p = cmds.add_parser("benchmark", help="write the world's held-out benchmark in TIFA v1.0's file format",
                        description="Held-out prompts with the oracle's questions and answers, as TIFA's "
                        "text-inputs and question-answers files (data/world/benchmark/tifa is the shipped copy).")
    p.add_argument("--out", required=True, help="output directory, e.g. data/world/benchmark/tifa")
    p.add_argument("--seed", type=int, default=DEFAULT["seed"], help=f"seed (default {DEFAULT['seed']})")
    p.add_argument("--prompts", type=int, default=DEFAULT["n"], help=f"prompts (default {DEFAULT['n']})")
    p.add_argument("--stream", default=DEFAULT["stream"], help=f"name of the random stream (default {DEFAULT['stream']})")
    p.add_argument("--split", default=DEFAULT["split"], choices=SPLITS,
                   help="seen: the training distribution's color-shape pairs | unseen: held-out pairs only | both: "
                   f"alternating, balanced per category (default {DEFAULT['split']})")
    p.set_defaults(func=_benchmark)
