"""The maintenance commands of `agfsync` (pure at import, as agfsync.cli): `unlock` after a
killed Snakemake, `stale` after a code change."""

from __future__ import annotations


def _cmd_unlock(args) -> int:
    from agfsync.core.unlock import main as unlock

    return unlock(args.directory)


def _cmd_stale(args) -> int:
    from agfsync.core.codestamp import main as stale

    return stale(args.directory, as_json=args.json)


def add_parsers(sub) -> None:
    p = sub.add_parser("unlock", help="after Snakemake was killed: remove its stale lock once nothing of that run runs",
                       description="Remove the lock a killed Snakemake left in DIRECTORY/.snakemake/locks (what "
                       "`snakemake --unlock` does), but only when no Snakemake runs in DIRECTORY on this host and "
                       "none of your SLURM jobs started from DIRECTORY is pending or running; otherwise name them "
                       "and exit 1.")
    p.add_argument("directory", nargs="?", default=".", help="the workflow's working directory (default: .)")
    p.set_defaults(func=_cmd_unlock)

    p = sub.add_parser("stale", help="outputs made by agfsync code that has changed since, and how to refresh them",
                       description="Every finished workflow job records the agfsync modules it ran (DIRECTORY/"
                       ".agfsync/code/). List the outputs that still exist and whose modules differ from the "
                       "installed agfsync's files, per rule with the modules that changed, and the `snakemake "
                       "--forcerun` command that redoes them (Snakemake's own 'code' rerun trigger is off in our "
                       "profiles: a checkout alone reschedules nothing). Exit 1 when something is stale.")
    p.add_argument("directory", nargs="?", default=".", help="the workflow's working directory (default: .)")
    p.add_argument("--json", action="store_true", help="print {stale: {rule: {outputs, modules}}, command} as JSON")
    p.set_defaults(func=_cmd_stale)
