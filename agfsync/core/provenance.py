"""What produced a result file (pure; imports no torch): agfsync's version, the git commit of
the checkout and whether its tracked files differed from it, Python and the versions of the
packages that shape the numbers, and the machine that wrote the file (on a cluster the
metric jobs may run on other nodes than the generation; the jobs' own logs name theirs).
Written under `provenance` into every results/{model}/{metric}.json
(agfsync.stages.result_parts.envelope) and shown by the report.

hub_commits() gives the hub commit of every model and scorer a config loads from the hub
(agfsync.core.downloads.hub_repos): the one the download marker resources/hub/<owner>--<name>.json
recorded when the login node fetched it; compute jobs run offline on that snapshot.

Versions come from the installed distributions' metadata (importlib.metadata), so reading
them imports nothing; the GPU names come from `nvidia-smi -L` where it exists. A checkout
without git (an unpacked archive, a scratch copy) records commit and dirty as null.
"""

from __future__ import annotations

import copy
import functools
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from agfsync import __version__
from agfsync.core.downloads import hub_marker
from agfsync.core.io import read_json

PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "open_clip_torch", "deepspeed", "bitsandbytes",
            "xformers", "triton", "numpy", "snakemake")
REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str, cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(root: Path = REPO) -> dict:
    """{"commit": HEAD's sha or None, "dirty": whether tracked files differ from it, or None}."""
    if shutil.which("git") is None or not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    commit = _run("git", "rev-parse", "HEAD", cwd=root)
    status = _run("git", "status", "--porcelain", "--untracked-files=no", cwd=root)
    return {"commit": commit.strip() if commit else None, "dirty": None if status is None else bool(status.strip())}


def packages() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict:
    gpus = []
    if shutil.which("nvidia-smi"):
        listed = _run("nvidia-smi", "-L") or ""
        gpus = [line.split(":", 1)[1].split("(UUID")[0].strip() for line in listed.splitlines() if ":" in line]
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "gpus": gpus}


def collect() -> dict:
    """The provenance record of this process (computed once; each caller gets its own copy)."""
    return copy.deepcopy(_collected())


@functools.lru_cache(maxsize=1)
def _collected() -> dict:
    return {"agfsync": __version__, "git": git_state(), "python": platform.python_version(),
            "packages": packages(), "hardware": hardware()}


def hub_commits(repos: Mapping[str, str | None], root: str | Path = ".") -> dict[str, dict]:
    """Per hub repository (repos: id -> configured revision, as downloads.hub_repos gives them):
    {"revision": the configured revision or None, "commit": the commit its download marker
    under `root` records, or None without a marker, "marker_revision": the revision the marker
    was fetched for (differs from "revision" when the marker is stale), or None}. Local
    model directories are not hub repositories and are not listed."""
    out = {}
    for repo_id, revision in sorted(repos.items()):
        marker = Path(root) / hub_marker(repo_id)
        record = read_json(marker) if marker.is_file() else {}
        out[repo_id] = {"revision": revision, "commit": record.get("commit"),
                        "marker_revision": record.get("revision")}
    return out
