"""The glue of every workflow script (pure at import: no torch).

A rule's script is two lines: `with job(snakemake) as j: <stage>.run(j.settings, j.inputs,
j.outputs, **j.wildcards)`. `job` does what every job needs before its stage runs:

- sends logging to the rule's log file (and stderr), masking the API key of every LLM
  section of the FULL config (agfsync.core.logs.job_logging), whatever stage this is;
- builds the stage's typed settings from the rule's `params.cfg` (agfsync.core.dag /
  common.smk `stage_config`): `Settings.from_dict(cfg, partial=True)`, so a section the
  rule did not declare raises SettingsError naming the key when read. The operational
  settings the rule leaves out of its params (LLM fetch settings, train.launch: they never
  change an output, so editing them reruns nothing) are put back from the full config first
  (agfsync.core.config.with_operational);
- in a model job (a rule that declares `cpu_threads`: its outputs depend on the thread
  count), binds the job's GPUs (agfsync.core.gpu_slots) and sets torch's intra-op threads
  from `cpu_threads` (`start_model_job`; torch is imported only then);
- when the stage returns, records the agfsync modules the job ran (its own and its torchrun
  workers') in the ledger `agfsync stale` reads (agfsync.core.codestamp);
- gives the digest of the FULL config for the job's model (`j.config_digest`,
  agfsync.core.config.config_digest), which the stage cannot compute from its declared
  sections and records as `config_hash` (train_dpo's summary.json).

The `agfsync` command builds the same settings from a config file and calls the same
`run()` functions (agfsync.cli), so the workflow and the command cannot drift apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
import types
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from agfsync.core import codestamp

log = logging.getLogger(__name__)


class Files(Mapping):
    """A job's input or output paths by name, as the rule names them (`output: pairs=...`).

    A value is one path (str) or a list of paths (a named list of files). A rule whose only
    file is unnamed (`output: "results/{model}/train_cache"`, the usual form of a one-output
    rule) has that file answer to whatever name its stage reads (`outputs["cache"]`): the stage
    names its files, the rule need not. Unnamed files next to named ones are not reachable by
    name; `unnamed` holds them in order."""

    def __init__(self, named: Mapping[str, Any] | None = None, unnamed: list | tuple = ()):
        self._named = dict(named or {})
        self.unnamed = tuple(unnamed)

    def _sole(self):
        return self.unnamed[0] if not self._named and len(self.unnamed) == 1 else None

    def __getitem__(self, name: str):
        if name in self._named:
            return self._named[name]
        sole = self._sole()
        if sole is not None:
            return sole
        raise KeyError(f"this job has no file named {name!r} (named: {', '.join(self._named) or 'none'})")

    def __contains__(self, name) -> bool:
        return name in self._named or self._sole() is not None

    def __iter__(self):
        return iter(self._named)

    def __len__(self) -> int:
        return len(self._named)

    def __repr__(self) -> str:
        return f"Files({self._named!r}, unnamed={list(self.unnamed)!r})"


def _paths(value):
    """One path as str, a list of files as a list of str."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value)


def files_of(namedlist) -> Files:
    """Snakemake's input or output (a Namedlist) as Files: named entries by name, the rest unnamed."""
    items = getattr(namedlist, "_allitems", None)
    if items is None:  # a plain mapping or list (a stand-in in tests)
        if isinstance(namedlist, Mapping):
            return Files({k: _paths(v) for k, v in namedlist.items()})
        return Files(unnamed=[str(v) for v in namedlist])
    named, unnamed = {}, []
    for name, value in items():
        if name is None:
            unnamed.append(str(value))
        else:
            named[name] = _paths(value)
    return Files(named, unnamed)


@dataclasses.dataclass(frozen=True)
class Job:
    """What a stage's run() gets from a workflow job."""

    settings: Any  # agfsync.core.sections.Settings: the sections the rule declared
    inputs: Files
    outputs: Files
    wildcards: Mapping[str, str]  # e.g. {"model": "sd15", "shard": "00002"}
    params: Mapping[str, Any]  # the rule's params other than cfg (config_hash, checkpoints, url, ...)
    log: str | None  # the rule's log file
    # agfsync.core.config.config_digest of the job's FULL config (restricted to its model wildcard, if any):
    # what a result file records as config_hash; None when the job has no config
    config_digest: str | None = None


def set_cpu_threads(cpu_threads: int) -> int:
    """torch's intra-op thread count from the config key `cpu_threads`, never from `--cores`
    or OMP_NUM_THREADS. On a CPU, float reductions (matmul, conv, softmax sums) split their
    work by thread, so the count changes the last bits of every activation and then, through
    sampling, the images: one fixed count makes a shard byte-identical whether Snakemake runs
    with --cores 1 or 32 (and whether the workflow or `agfsync` runs the stage)."""
    import torch

    threads = int(cpu_threads)
    torch.set_num_threads(threads)
    log.info("cpu_threads: %d intra-op thread(s) (config cpu_threads; results on a CPU depend on it)", threads)
    return threads


def start_model_job(cpu_threads: int, gpus: int = 0) -> int:
    """What every model job (generation, scoring, caching, evaluation, the training launcher)
    does first: bind its GPUs (one machine: devices no other job holds) and set the threads."""
    from agfsync.core.gpu_slots import bind_gpus

    bind_gpus(gpus)
    return set_cpu_threads(cpu_threads)


def stage_settings(stage_cfg: Mapping | None, full_cfg: Mapping | None = None):
    """A job's typed settings: its rule's params.cfg, with the operational keys back from the
    full config, as partial Settings (undeclared sections raise when read)."""
    from agfsync.core.config import with_operational
    from agfsync.core.sections import Settings

    cfg = _plain(stage_cfg or {})
    if full_cfg is not None:
        cfg = with_operational(cfg, _plain(full_cfg))
    return Settings.from_dict(cfg, partial=True)


def _plain(value):
    """Snakemake's params and config as plain dicts and lists."""
    if isinstance(value, (Mapping, types.MappingProxyType)):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@contextlib.contextmanager
def job(snakemake) -> Iterator[Job]:
    """The context of one workflow job (see the module docstring); yields a Job."""
    from agfsync.core.logs import job_logging, secret_env_names

    full = _plain(getattr(snakemake, "config", None) or {})
    params = {name: value for name, value in snakemake.params.items()}
    stage_cfg = params.pop("cfg", None)
    log_path = str(snakemake.log[0]) if len(snakemake.log) else None
    wildcards = {k: str(v) for k, v in snakemake.wildcards.items()}
    with job_logging(log_path, secret_env_names(full)):
        settings = stage_settings(stage_cfg, full or None)
        if stage_cfg is not None and "cpu_threads" in stage_cfg:
            start_model_job(settings.cpu_threads, getattr(snakemake.resources, "gpu", 0))
        digest = None
        if full:
            from agfsync.core.config import config_digest

            digest = config_digest(full, wildcards.get("model"))
        rule = getattr(snakemake, "rule", None)  # Snakemake's script object has it; a test's stand-in may not
        children = codestamp.LEDGER / ".children" / uuid.uuid4().hex  # on the shared file system, for srun's nodes
        since = time.time()  # a module modified after this may not be what ran (codestamp.modules_ran)
        before = {name: os.environ.get(name) for name in (codestamp.CHILD_ENV, codestamp.SINCE_ENV)}
        if rule:
            os.environ.update({codestamp.CHILD_ENV: str(children.resolve()), codestamp.SINCE_ENV: repr(since)})
        try:
            yield Job(settings=settings, inputs=files_of(snakemake.input), outputs=files_of(snakemake.output),
                      wildcards=types.MappingProxyType(wildcards), params=types.MappingProxyType(params),
                      log=log_path, config_digest=digest)
            if rule:  # the job succeeded: record the code behind its outputs (agfsync stale)
                codestamp.record_job(rule, [str(o) for o in snakemake.output], children, since)
        finally:
            shutil.rmtree(children, ignore_errors=True)
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def put_on_pythonpath(root) -> None:
    """Jobs import agfsync from the checkout `root` in any environment (the workflow calls this
    at parse time; jobs inherit the environment): with --use-conda, whose environments
    Snakemake builds from a copy of envs/agfsync.yaml, so a `pip -e` of the checkout cannot be
    written there; and on cluster nodes (sbatch exports the environment)."""
    paths = [str(root), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
