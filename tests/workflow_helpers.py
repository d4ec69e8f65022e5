"""Running the workflow from the tests: a scratch copy of the repository (so the checkout
stays clean), Snakemake as a subprocess, and the job table of its output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
DEMO = ["--configfile", "config/tiny.yaml"]


def workdir(tmp_path: Path) -> Path:
    """The parts of the repository a run reads, profiles and their root links included."""
    for name in ("workflow", "config", "data", "envs", "profiles"):
        shutil.copytree(REPO / name, tmp_path / name)
    for name in ("slurm", "workstation"):
        os.symlink(os.readlink(REPO / name), tmp_path / name)
    return tmp_path


# The paper's config at a size whose DAG parses in a few seconds: the same rules, models,
# benchmarks and downloads, 12 candidate shards per model instead of 717. Only
# test_workflow.py::test_dry_run_of_the_paper_config_needs_no_torch dry-runs the full size.
SMALL_PAPER = ["--configfile", "config/small_paper.yaml"]
SMALL_PAPER_SHARDS = 12


def small_paper(cwd: Path) -> Path:
    """Writes config/small_paper.yaml (the paper's config, 12 x 64 prompts) into a workdir."""
    (cwd / "config" / "small_paper.yaml").write_text(
        "extends: config/config.yaml\nprompts:\n  per_category: 64  # 768 prompts: 12 shards of 64\n")
    return cwd


def snakemake(cwd: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run or dry run, without the total."""
    lines = output.split("Job stats:", 1)[1].lstrip("\n").splitlines()
    assert lines[1].startswith("---"), lines[:3]
    counts = {}
    for line in lines[2:]:
        if not line.strip():
            break
        name, count = line.split()
        if name != "total":
            counts[name] = int(count)
    return counts
