"""Named runs: experiments side by side in one checkout (pure: no torch).

A config with `run: NAME` writes every output of the workflow (results/, logs/,
benchmarks/, Snakemake's .snakemake/ with its lock, our .agfsync/ code ledger) under
`<runs root>/NAME/` instead of the directory Snakemake started in: the Snakefile makes
that folder the workflow's working directory (common.smk). The runs root is
$AGFSYNC_RUNS_DIR when set (a machine's scratch space; every job of a run must see the
same value, as SLURM jobs do by default), else `runs/` in the checkout.

Inputs stay shared: a run folder holds links `data` and `resources` to the checkout's,
so relative input paths of a config (the world's data/, the downloads, the tiny models,
the LLM cache under resources/) mean the same files in every run and nothing is
downloaded twice. Any other relative input path is read inside the run folder: name it
by an absolute path. `snakemake --directory DIR` wins over `run:` (Snakemake ignores a
workflow's working directory when --directory is given).

The run name is not part of any output's identity (agfsync.core.config's operational
keys): two runs of one config write the same bytes in two places.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from agfsync.core.config import REPO_ROOT
from agfsync.core.layout import RESULTS

ENV = "AGFSYNC_RUNS_DIR"
RUNS = "runs"  # under the checkout, when $AGFSYNC_RUNS_DIR is not set
SHARED = ("data", "resources")  # linked from every run folder to the checkout's
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # the schema's pattern for `run`


def runs_root(checkout: Path, env: dict | None = None) -> Path:
    """Where run folders go: $AGFSYNC_RUNS_DIR (made absolute), else <checkout>/runs."""
    value = (os.environ if env is None else env).get(ENV, "").strip()
    return Path(value).expanduser().absolute() if value else checkout / RUNS


def run_dir(config: dict, checkout: Path, env: dict | None = None) -> Path | None:
    """The run folder of a checked config (None when `run` is null: the working directory)."""
    name = config.get("run")
    if name is None:
        return None
    if not isinstance(name, str) or not NAME.fullmatch(name):  # fullmatch: no final newline either
        raise ValueError(f"key 'run': {name!r} is not a run name (letters, digits, '.', '_', '-', starting with a "
                         "letter or digit; at most 64)")
    return runs_root(checkout, env) / name


def prepare(folder: Path, checkout: Path) -> list[str]:
    """Create the run folder and its links to the checkout's shared inputs (idempotent: a
    job of the run, or a rerun, finds them made), and the shared folders themselves (a
    fresh clone has no resources/: a link to nothing would fail every job writing there).
    An entry of that name that is already there and is not such a link is kept (the run's
    own inputs, or a link to another checkout's); returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = []
    for name in SHARED:
        link, target = folder / name, checkout / name
        target.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.exists() or link.is_symlink():
            kept.append(name)
            continue
        try:
            link.symlink_to(target, target_is_directory=True)
        except FileExistsError:  # a concurrent job of the same run made it
            pass
    return kept


def outputs_root(config: dict, checkout: Path = REPO_ROOT, env: dict | None = None) -> Path:
    """The folder a config's results/ and logs/ are in, for commands run outside the
    workflow (agfsync report, generate, export-pairs): the run folder, else '.'."""
    return run_dir(config, checkout, env) or Path(".")


def results_dir(config: dict, checkout: Path = REPO_ROOT, env: dict | None = None) -> str:
    """The results/ folder of a config's run (agfsync report's default)."""
    return str(outputs_root(config, checkout, env) / RESULTS)
