"""Wall time and GPU-hours per stage, from Snakemake's benchmark files (pure; imports no torch).

Every rule with a `benchmark:` directive has Snakemake write one TSV per job at the path
agfsync.core.layout.JOB_BENCHMARKS names (benchmarks/{model}/candidates_generate/shard-00000.tsv
...): a header row (s, h:m:s, max_rss, max_vms, max_uss, max_pss, io_in, io_out, mean_load,
cpu_time), then one row per run of the job (more than one only with Snakemake's `repeat()`).
`s` is the run's wall time in seconds.

collect() groups the files under <root>/benchmarks by rule, and by model where the rule's
pattern has {model}, and sums per group: jobs (files), wall seconds (every row of every file)
and GPU-hours = wall seconds x the GPUs a job of the rule holds / 3600 (agfsync.core.dag.job_gpus:
the resources the rules ask for, so the GPUs reserved, busy or not).

Benchmark files are no rule's output: they exist only for jobs that ran here (none after a dry
run), and a file left by a job of an earlier config (a shard that no longer exists) still
counts. A file that cannot be read (read_benchmark raises BenchmarkError naming file and
line) is left out of the sums and listed in Costs.skipped with a logged warning: the timing
files are bookkeeping, and one torn file must not stop the report of a finished run, but
the page says which files its totals lack.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agfsync.core import layout
from agfsync.core.io import DataError

log = logging.getLogger(__name__)

STAGES = tuple(layout.JOB_BENCHMARKS)  # in workflow order


class BenchmarkError(DataError):
    """A benchmark file that is not Snakemake's TSV; the message names the file and line."""


@dataclass
class StageCost:
    """One rule's jobs, for one model (model None: a rule without {model}, run once for all)."""

    rule: str
    model: str | None
    gpus: int  # GPUs per job
    jobs: int = 0
    runs: int = 0
    wall_s: float = 0.0

    @property
    def gpu_hours(self) -> float:
        return self.wall_s * self.gpus / 3600.0


@dataclass
class Costs:
    stages: list[StageCost] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path:line: why", left out of the sums

    @property
    def measured(self) -> bool:
        return bool(self.stages)

    def per_rule(self) -> list[StageCost]:
        """Per rule, summed over models (model None), in workflow order."""
        out: dict[str, StageCost] = {}
        for s in self.stages:
            total = out.setdefault(s.rule, StageCost(s.rule, None, s.gpus))
            total.jobs, total.runs, total.wall_s = total.jobs + s.jobs, total.runs + s.runs, total.wall_s + s.wall_s
        return [out[rule] for rule in STAGES if rule in out]

    def total(self) -> dict:
        return {"jobs": sum(s.jobs for s in self.stages), "wall_s": sum(s.wall_s for s in self.stages),
                "gpu_hours": sum(s.gpu_hours for s in self.stages)}


def read_benchmark(path: str | Path) -> list[float]:
    """The wall seconds of each run one benchmark file records."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BenchmarkError(f"{path}: cannot be read ({err})") from None
    if not lines or lines[0].split("\t")[0] != "s":
        raise BenchmarkError(f"{path}:1: not a Snakemake benchmark header (its first column must be 's'): "
                             f"{(lines or [''])[0][:80]!r}")
    width = len(lines[0].split("\t"))
    runs = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != width:
            raise BenchmarkError(f"{path}:{number}: {len(fields)} fields, the header has {width}")
        try:
            seconds = float(fields[0])
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            raise BenchmarkError(f"{path}:{number}: wall seconds {fields[0]!r} is not a number >= 0")
        runs.append(seconds)
    if not runs:
        raise BenchmarkError(f"{path}:2: no run under the header")
    return runs


def _regex(pattern: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", pattern)
    return re.compile("".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts) + "$")


# fixed paths first, so that benchmarks/models/models_tiny.tsv is never read as a model "models"
_PATTERNS = [(rule, _regex(p)) for rule, p in sorted(layout.JOB_BENCHMARKS.items(), key=lambda x: "{" in x[1])]


def rule_of(relative: str) -> tuple[str, str | None] | None:
    """(rule, model or None) of a benchmark path relative to the working directory; None: not a rule's."""
    for rule, regex in _PATTERNS:
        match = regex.match(relative)
        if match:
            return rule, match.groupdict().get("model")
    return None


def collect(root: str | Path, gpus: Mapping[str, int], models: Iterable[str] | None = None) -> Costs:
    """The costs of the jobs whose benchmark files lie under <root>/benchmarks. gpus: GPUs per
    job of each rule (agfsync.core.dag.job_gpus; a rule not in it holds none); models: keep only
    these models' files (and the rules without {model}); None keeps all."""
    root = Path(root)
    keep = None if models is None else set(models)
    groups: dict[tuple[str, str | None], StageCost] = {}
    costs = Costs()
    base = root / "benchmarks"
    for path in sorted(base.rglob("*.tsv")) if base.is_dir() else []:
        found = rule_of(path.relative_to(root).as_posix())
        if found is None or (keep is not None and found[1] is not None and found[1] not in keep):
            continue
        try:
            runs = read_benchmark(path)
        except BenchmarkError as err:
            log.warning("costs: left out of the compute totals: %s", err)
            costs.skipped.append(str(err))
            continue
        stage = groups.setdefault(found, StageCost(found[0], found[1], int(gpus.get(found[0], 0))))
        stage.jobs, stage.runs, stage.wall_s = stage.jobs + 1, stage.runs + len(runs), stage.wall_s + sum(runs)
    order = {rule: i for i, rule in enumerate(STAGES)}
    costs.stages = sorted(groups.values(), key=lambda s: (s.model is not None, s.model or "", order[s.rule]))
    return costs


def hms(seconds: float) -> str:
    """Wall time as h:mm:ss (hours unbounded), rounded to the second."""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
