"""Reruns that never waste work: the profiles leave Snakemake's "code" trigger out, every
finished job records the agfsync modules it ran, and `agfsync stale` names the outputs made
by code that has changed since (agfsync.core.codestamp)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO
from workflow_helpers import snakemake, workdir

from agfsync.core import codestamp
from agfsync.core.io import DataError


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package `fakeagf` with two modules, imported from tmp_path."""
    root = tmp_path / "src" / "fakeagf"
    root.mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("A = 1\n")
    (root / "b.py").write_text("B = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    modules = {name: importlib.import_module(name) for name in ("fakeagf", "fakeagf.a", "fakeagf.b")}
    yield root, {**modules, "json": json}  # a module outside the package is not recorded
    for name in modules:
        sys.modules.pop(name, None)


def test_modules_ran_are_the_package_files_with_their_sha256(fake_package):
    root, modules = fake_package
    ran = codestamp.modules_ran(modules, root=root)
    assert ran == {f"fakeagf/{n}": codestamp.file_digest(root / n) for n in ("__init__.py", "a.py", "b.py")}
    assert ran["fakeagf/a.py"] == hashlib.sha256(b"A = 1\n").hexdigest()
    assert codestamp.digest(ran) == codestamp.digest(dict(reversed(ran.items()))) != codestamp.digest({})


def test_stale_names_the_outputs_of_changed_or_removed_modules_only(fake_package, tmp_path, capsys):
    root, modules = fake_package
    work = tmp_path / "work"
    for name in ("out/a.txt", "out/b.txt", "out/gone.txt"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("x")
    ran = codestamp.modules_ran(modules, root=root)
    only_b = {k: v for k, v in ran.items() if k != "fakeagf/a.py"}
    codestamp.record("rule_a", ["out/a.txt"], ran, work)
    codestamp.record("rule_b", ["out/b.txt"], only_b, work)
    codestamp.record("rule_gone", ["out/gone.txt"], ran, work)
    assert codestamp.stale(work, root=root) == {}

    (root / "a.py").write_text("A = 1  # an edit\n")
    (work / "out/gone.txt").unlink()  # an output deleted since: nothing to refresh
    assert codestamp.stale(work, root=root) == {
        "rule_a": {"outputs": ["out/a.txt"], "modules": {"fakeagf/a.py": "changed"}}}

    (root / "b.py").unlink()
    found = codestamp.stale(work, root=root)
    assert found["rule_b"] == {"outputs": ["out/b.txt"], "modules": {"fakeagf/b.py": "removed"}}
    assert found["rule_a"]["modules"] == {"fakeagf/a.py": "changed", "fakeagf/b.py": "removed"}
    assert codestamp.command(found) == "snakemake --forcerun rule_a rule_b"

    # a rerun of the job replaces its entry: refreshed, it is no longer stale
    codestamp.record("rule_a", ["out/a.txt"], codestamp.modules_ran({"fakeagf": modules["fakeagf"]}, root=root), work)
    assert list(codestamp.stale(work, root=root)) == ["rule_b"]


def test_the_command_prints_the_stale_outputs_and_the_forcerun_line(tmp_path, capsys):
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "results/x.json").write_text("{}")
    assert codestamp.main(str(work)) == 0
    assert "no ledger in" in capsys.readouterr().out
    real = codestamp.modules_ran()
    codestamp.record("eval_metric", ["results/x.json"], {**real, "agfsync/core/nothing_here.py": "0" * 64}, work)
    assert codestamp.main(str(work)) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == ["eval_metric: 1 output(s) made by code that has changed since:",
                                    "  removed: agfsync/core/nothing_here.py", "    results/x.json"]
    assert out.rstrip().endswith("  snakemake --forcerun eval_metric")
    assert codestamp.main(str(work), as_json=True) == 1
    assert json.loads(capsys.readouterr().out) == {
        "stale": {"eval_metric": {"outputs": ["results/x.json"], "modules": {"agfsync/core/nothing_here.py": "removed"}}},
        "command": "snakemake --forcerun eval_metric"}

    bad = work / codestamp.LEDGER / "eval_metric" / "torn.json"
    bad.write_text('{"rule": "eval_metric", "outp')
    with pytest.raises(DataError, match=r"torn.json: not a ledger entry of agfsync .*; delete it"):
        codestamp.stale(work)


def test_a_child_process_reports_the_modules_it_ran_at_exit(tmp_path):
    folder = tmp_path / "children"
    code = ("from agfsync.core.codestamp import report_child_modules; report_child_modules(); "
            "import agfsync.core.stats")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, codestamp.CHILD_ENV: str(folder)})
    reported = codestamp.child_modules(folder)
    path = REPO / "agfsync" / "core" / "stats.py"
    if codestamp.package_root() == REPO / "agfsync":
        assert reported["agfsync/core/stats.py"] == codestamp.file_digest(path)
    assert "agfsync/core/codestamp.py" in reported and "agfsync/core/io.py" in reported


def test_a_checkout_reruns_nothing_and_agfsync_stale_names_what_a_module_change_touched(tmp_path):
    """A finished demo job (the prompts, from the world writer), with agfsync copied into the
    working directory and imported from there (PYTHONPATH): a workflow script edited reruns
    nothing (profiles/default has no "code" trigger); an edited stage module makes
    `agfsync stale` name that stage's outputs and no other; its --forcerun command refreshes them."""
    cwd = workdir(tmp_path / "w")
    shutil.copytree(REPO / "agfsync", cwd / "agfsync", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(cwd)}
    target = ["results/prompts/prompts.jsonl", "--configfile", "config/demo.yaml"]
    first = snakemake(cwd, *target, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "workflow specific profile profiles/default" in first.stderr

    def stale() -> tuple[int, dict]:
        out = subprocess.run([sys.executable, "-m", "agfsync.cli", "stale", "--json"], cwd=cwd, capture_output=True,
                             text=True, env={**os.environ, **env})
        return out.returncode, json.loads(out.stdout)

    assert stale() == (0, {"stale": {}, "command": None})
    rules = sorted(p.name for p in (cwd / codestamp.LEDGER).iterdir() if not p.name.startswith("."))
    assert rules == ["eval_prompts", "prompts_generate"]
    entry = json.loads(next((cwd / codestamp.LEDGER / "prompts_generate").glob("*.json")).read_text())
    assert entry["outputs"] == ["results/prompts/prompts.jsonl", "results/prompts/prompts_summary.json"]
    assert "agfsync/stages/prompts.py" in entry["modules"] and "agfsync/world/writer.py" in entry["modules"]

    script = cwd / "workflow" / "scripts" / "prompts_generate.py"
    script.write_text(script.read_text() + "# a checkout changed this script\n")
    dry = snakemake(cwd, "-n", *target, env=env)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]
    without = snakemake(cwd, "-n", *target, "--workflow-profile", "none", env=env)  # Snakemake's default triggers
    assert without.returncode == 0 and "Code has changed since last execution" in without.stdout, without.stdout[-2000:]

    module = cwd / "agfsync" / "stages" / "prompts.py"
    module.write_text(module.read_text() + "# a checkout changed the stage's logic\n")
    code, found = stale()
    assert code == 1 and found == {
        "stale": {"prompts_generate": {"outputs": ["results/prompts/prompts.jsonl", "results/prompts/prompts_summary.json"],
                                       "modules": {"agfsync/stages/prompts.py": "changed"}}},
        "command": "snakemake --forcerun prompts_generate"}

    again = snakemake(cwd, *target, "--forcerun", "prompts_generate", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert stale() == (0, {"stale": {}, "command": None})


def test_a_job_records_its_modules_and_its_workers_and_a_failed_job_records_nothing(tmp_path, monkeypatch):
    """agfsync.core.jobs.job: on success, one ledger entry with the job's modules and those its
    child processes reported (the training's torchrun workers); the environment is restored."""
    from snakemake.iocontainers import Namedlist

    from agfsync.core.jobs import job

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(codestamp.CHILD_ENV, raising=False)
    fake = SimpleNamespace(config={}, params=Namedlist(fromdict={}), log=Namedlist([str(tmp_path / "job.log")]),
                           input=Namedlist([]), output=Namedlist(["results/out.json"]),
                           wildcards=Namedlist(fromdict={}), resources=SimpleNamespace(), rule="train_dpo")
    worker = "from agfsync.core.codestamp import report_child_modules; report_child_modules(); import agfsync.core.stats"
    reported = []
    real = codestamp.child_modules
    monkeypatch.setattr(codestamp, "child_modules", lambda folder: reported.append(real(folder)) or reported[-1])
    with job(fake):
        assert codestamp.CHILD_ENV in os.environ
        subprocess.run([sys.executable, "-c", worker], check=True)
    assert codestamp.CHILD_ENV not in os.environ
    assert not (tmp_path / codestamp.LEDGER / ".children").exists() or not any(
        (tmp_path / codestamp.LEDGER / ".children").iterdir())
    (entry,) = codestamp.entries(tmp_path)
    assert entry["rule"] == "train_dpo" and entry["outputs"] == ["results/out.json"]
    assert "agfsync/core/stats.py" in reported[0] and "agfsync/core/jobs.py" in entry["modules"]  # the worker's, ours
    assert reported[0].items() <= entry["modules"].items()
    assert entry["digest"] == codestamp.digest(entry["modules"])

    fake.rule, fake.output = "eval_metric", Namedlist(["results/failed.json"])
    with pytest.raises(RuntimeError, match="boom"), job(fake):
        raise RuntimeError("boom")
    assert [e["rule"] for e in codestamp.entries(tmp_path)] == ["train_dpo"]


def test_a_module_edited_while_the_job_ran_is_stale_whatever_its_content_now(fake_package, tmp_path, caplog):
    import time

    root, modules = fake_package
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "out/a.txt").write_text("x")
    started = time.time()
    os.utime(root / "a.py", (started + 5, started + 5))  # a checkout during the job
    ran = codestamp.modules_ran(modules, root=root, since=started)
    assert ran["fakeagf/a.py"] == codestamp.CHANGED_DURING_JOB != ran["fakeagf/b.py"]
    codestamp.record("rule_a", ["out/a.txt"], ran, work)
    assert codestamp.stale(work, root=root) == {
        "rule_a": {"outputs": ["out/a.txt"], "modules": {"fakeagf/a.py": "changed while the job ran"}}}

    # bookkeeping that fails (here: .agfsync is a file) warns and never fails the job
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / ".agfsync").write_text("not a folder")
    cwd = os.getcwd()
    os.chdir(tmp_path / "blocked")
    try:
        codestamp.record_job("rule_a", ["out/a.txt"], tmp_path / "no-children", started)
    finally:
        os.chdir(cwd)
    assert "could not record the code of this job" in caplog.text


@pytest.mark.parametrize("profile", ["default", "slurm", "workstation"])
def test_every_profile_leaves_the_code_trigger_out(profile):
    settings = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    assert settings["rerun-triggers"] == ["mtime", "params", "input", "software-env"]
