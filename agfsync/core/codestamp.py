"""The code behind every output: what `agfsync stale` compares with the code of today.

The profiles (profiles/default, applied by Snakemake whether or not `--profile` is given,
and profiles/slurm, profiles/workstation) leave Snakemake's "code" rerun trigger out: a
checkout that touches a workflow script reschedules no finished job, and a change in
agfsync/, where the logic lives, never did. Instead each finished job records, in its
working directory's ledger `.agfsync/code/<rule>/<key>.json` (atomic), its outputs, the
agfsync version and the sha256 of every agfsync module the job ran: the modules its process
had imported when the stage returned, and those of the processes it started that report
here (the training's torchrun workers: `report_child_modules`). `agfsync stale` lists the
outputs whose modules have changed since, grouped by rule, with the modules that changed
and the command that refreshes them (`snakemake --forcerun RULE...`; what runs after
them reruns by modification time).

Pure (no torch).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

LEDGER = Path(".agfsync") / "code"
CHILD_ENV = "AGFSYNC_CODE_MODULES"  # a directory where child processes of a job report their modules
SINCE_ENV = "AGFSYNC_CODE_SINCE"  # the job's start (time.time()), for its child processes
PACKAGE = "agfsync"


def package_root() -> Path:
    import agfsync

    return Path(agfsync.__file__).resolve().parent


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CHANGED_DURING_JOB = "changed-during-the-job"  # never a sha256: such a module is always stale


def modules_ran(modules: Mapping | None = None, root: Path | None = None, since: float | None = None) -> dict[str, str]:
    """{path relative to the package's parent: sha256} of every loaded module whose file is in
    the package (sys.modules unless `modules` is given). The files are read when this is
    called, after the job: a module modified after `since` (the job's start, a time.time())
    or gone since is recorded as CHANGED_DURING_JOB, since what ran is then unknown."""
    root = (root or package_root()).resolve()
    out = {}
    for module in list((sys.modules if modules is None else modules).values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if path.suffix != ".py" or root not in path.parents:
            continue
        rel = path.relative_to(root.parent).as_posix()
        try:
            changed = since is not None and path.stat().st_mtime > since
            out[rel] = CHANGED_DURING_JOB if changed else file_digest(path)
        except OSError:  # removed while the job ran
            out[rel] = CHANGED_DURING_JOB
    return dict(sorted(out.items()))


def digest(modules: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(modules.items())).encode()).hexdigest()[:16]


def report_child_modules() -> None:
    """In a process a job started (a torchrun worker): at exit, report its modules to the job."""
    folder = os.environ.get(CHILD_ENV)
    if folder:
        atexit.register(_write_child, Path(folder))


def _write_child(folder: Path) -> None:
    import socket

    from agfsync.core.io import write_json

    since = os.environ.get(SINCE_ENV)
    # several nodes (srun) share the folder: host and pid name the report
    write_json(folder / f"pid-{socket.gethostname()}-{os.getpid()}.json",
               modules_ran(since=float(since) if since else None))


def child_modules(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(Path(folder).glob("pid-*.json")):
        with contextlib.suppress(OSError, ValueError):  # written atomically; a foreign file is skipped
            out.update(json.loads(path.read_text()))
    return out


def _key(outputs: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(sorted(outputs)).encode()).hexdigest()[:16]


def record_job(rule: str, outputs: Iterable[str], children: Path, since: float) -> None:
    """After a job succeeded: its ledger entry. A failure here (a full disk, an unwritable
    .agfsync/) is a warning: it must never fail a job whose outputs are written."""
    import logging

    try:
        modules = {**child_modules(children), **modules_ran(since=since)}
        record(rule, outputs, modules)
    except OSError as err:
        logging.getLogger(__name__).warning("agfsync stale: could not record the code of this job (%s); "
                                            "`agfsync stale` will not know its outputs", err)


def record(rule: str, outputs: Iterable[str], modules: Mapping[str, str], directory: str | Path = ".") -> Path:
    """The ledger entry of one finished job (replaces the entry of an earlier run of it)."""
    from agfsync import __version__
    from agfsync.core.io import write_json

    outputs = sorted(str(o) for o in outputs)
    safe_rule = "".join(c if c.isalnum() or c in "_-" else "_" for c in rule) or "rule"
    path = Path(directory) / LEDGER / safe_rule / f"{_key(outputs)}.json"
    write_json(path, {"rule": rule, "outputs": outputs, "agfsync": __version__, "digest": digest(modules),
                      "modules": dict(sorted(modules.items()))})
    return path


def entries(directory: str | Path = ".") -> list[dict]:
    """Every ledger entry, in path order; an unreadable one raises naming its file."""
    from agfsync.core.io import DataError

    out = []
    for path in sorted((Path(directory) / LEDGER).glob("*/*.json")):
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            entry["rule"], entry["outputs"], entry["modules"]  # noqa: B018 (the fields every entry has)
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}: not a ledger entry of agfsync ({err}); delete it") from err
        out.append(entry)
    return out


def stale(directory: str | Path = ".", root: Path | None = None) -> dict[str, dict]:
    """{rule: {"outputs": [...], "modules": {path: "changed" | "removed"}}} for every recorded
    output that still exists and whose modules differ from the package's files today."""
    root = (root or package_root()).resolve()
    out: dict[str, dict] = {}
    for entry in entries(directory):
        changed = {}
        for rel, sha in entry["modules"].items():
            path = root.parent / rel
            if not path.is_file():
                changed[rel] = "removed"
            elif sha == CHANGED_DURING_JOB:
                changed[rel] = "changed while the job ran"
            elif file_digest(path) != sha:
                changed[rel] = "changed"
        present = [o for o in entry["outputs"] if (Path(directory) / o).exists()]
        if changed and present:
            rule = out.setdefault(entry["rule"], {"outputs": [], "modules": {}})
            rule["outputs"] += present
            rule["modules"].update(changed)
    return {rule: {"outputs": sorted(v["outputs"]), "modules": dict(sorted(v["modules"].items()))}
            for rule, v in sorted(out.items())}


def main(directory: str = ".", as_json: bool = False) -> int:
    """`agfsync stale`: print the stale outputs and the command that refreshes them; exit 1 if any."""
    found = stale(directory)
    if as_json:
        print(json.dumps({"stale": found, "command": command(found)}, indent=2))
        return 1 if found else 0
    if not (Path(directory) / LEDGER).is_dir():
        print(f"agfsync stale: no ledger in {Path(directory) / LEDGER}: no job of this agfsync has finished here")
        return 0
    if not found:
        print("agfsync stale: every recorded output was made by the code of today")
        return 0
    for rule, info in found.items():
        print(f"{rule}: {len(info['outputs'])} output(s) made by code that has changed since:")
        for module, how in info["modules"].items():
            print(f"  {how}: {module}")
        for path in info["outputs"][:10]:
            print(f"    {path}")
        if len(info["outputs"]) > 10:
            print(f"    ... and {len(info['outputs']) - 10} more")
    print(f"\nto refresh them (with your usual --configfile / --profile options):\n  {command(found)}")
    return 1


def command(found: Mapping[str, dict]) -> str | None:
    return f"snakemake --forcerun {' '.join(found)}" if found else None
