"""Named runs (`run: NAME`, agfsync.core.runs): experiments side by side in one checkout,
each writing results/, logs/, benchmarks/ and Snakemake's own state in its own folder."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agfsync.core import runs
from agfsync.core.config import ConfigError, check_config, config_digest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def test_run_folder_is_under_the_checkout_or_the_env_root(tmp_path):
    assert runs.run_dir({"run": None}, REPO, env={}) is None
    assert runs.outputs_root({"run": None}, REPO, env={}) == Path(".")
    assert runs.run_dir({"run": "beta-0.5"}, REPO, env={}) == REPO / "runs" / "beta-0.5"
    assert runs.run_dir({"run": "a"}, REPO, env={runs.ENV: str(tmp_path)}) == tmp_path / "a"
    assert runs.results_dir({"run": "a"}, REPO, env={runs.ENV: str(tmp_path)}) == str(tmp_path / "a" / "results")
    assert runs.results_dir({"run": None}, REPO, env={}) == "results"
    for bad in ("../x", "exp\n"):  # Python's $ also matches before a final newline: not here
        with pytest.raises(ValueError, match=r"key 'run': .* is not a run name \(letters, digits, '\.', '_', '-', "
                                             r"starting with a letter or digit; at most 64\)"):
            runs.run_dir({"run": bad}, REPO, env={})


@pytest.mark.parametrize("name", ["a/b", "../up", ".hidden", "x" * 65, "sp ace"])
def test_a_run_name_that_is_not_a_folder_name_is_rejected_naming_the_key(demo_config, name):
    cfg = copy.deepcopy(demo_config)
    cfg["run"] = name
    with pytest.raises(ConfigError) as err:
        check_config(cfg, source="exp.yaml")
    shown = repr(name) if len(name) < 40 else repr(name)[:40]  # long values are shortened in messages
    assert f"key 'run': {shown}" in str(err.value)
    assert "must match the pattern ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$" in str(err.value)


def test_the_run_name_is_no_part_of_any_output_identity(demo_config):
    named = check_config({**copy.deepcopy(demo_config), "run": "exp1"})
    assert config_digest(named) == config_digest(check_config(copy.deepcopy(demo_config)))
    assert config_digest(named, "sd15") == config_digest(check_config(copy.deepcopy(demo_config)), "sd15")


def test_prepare_links_the_shared_inputs_once_and_keeps_a_runs_own(tmp_path):
    checkout = tmp_path / "checkout"
    for name in runs.SHARED:
        (checkout / name).mkdir(parents=True)
    folder = tmp_path / "runs" / "r1"
    assert runs.prepare(folder, checkout) == []
    assert runs.prepare(folder, checkout) == []  # idempotent: every job of the run parses the Snakefile again
    assert {p.name: Path(os.readlink(p)) for p in folder.iterdir()} == {n: checkout / n for n in runs.SHARED}
    own = tmp_path / "runs" / "r2"
    (own / "resources").mkdir(parents=True)
    assert runs.prepare(own, checkout) == ["resources"]
    assert not (own / "resources").is_symlink() and (own / "data").is_symlink()
    fresh = tmp_path / "fresh"  # a fresh clone has data/ but no resources/ (ignored by git)
    (fresh / "data").mkdir(parents=True)
    assert runs.prepare(tmp_path / "runs" / "r3", fresh) == []
    (tmp_path / "runs" / "r3" / "resources" / "tiny_models").mkdir()  # what a job writing there does
    assert (fresh / "resources" / "tiny_models").is_dir()


def _snakemake(args, cwd, env_root, timeout=600):
    env = {**os.environ, runs.ENV: str(env_root)}
    out = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "workflow" / "Snakefile"), *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_two_named_runs_write_apart_and_alike(tmp_path):
    """The same target in two runs: each run's folder gets its results, logs, benchmarks and
    Snakemake state; the directory Snakemake started in gets nothing; the bytes agree."""
    start, root = tmp_path / "start", tmp_path / "runs"
    start.mkdir()
    for name in ("one", "two"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"extends": "config/tiny.yaml", "run": name}))
        _snakemake(["--cores", "1", "results/prompts/qa.jsonl", "--configfile", str(tmp_path / f"{name}.yaml")],
                   start, root)
    assert sorted(p.name for p in start.iterdir()) == [".snakemake"]  # Snakemake's own log, before the move
    assert not (start / ".snakemake" / "locks").exists() or not list((start / ".snakemake" / "locks").iterdir())
    for name in ("one", "two"):
        run = root / name
        assert (run / "results" / "prompts" / "qa.jsonl").is_file()
        assert (run / "logs" / "prompts" / "qa_generate.log").is_file()
        assert (run / "benchmarks" / "prompts" / "qa_generate.tsv").is_file()
        assert (run / ".snakemake" / "metadata").is_dir()
        assert (run / ".agfsync" / "code" / "qa_generate").is_dir()
        assert Path(os.readlink(run / "data")) == REPO / "data"
    assert (root / "one" / "results/prompts/qa.jsonl").read_bytes() == (root / "two" / "results/prompts/qa.jsonl").read_bytes()
    again = _snakemake(["--cores", "1", "results/prompts/qa.jsonl", "--configfile", str(tmp_path / "one.yaml")],
                       start, root)
    assert "Nothing to be done" in again.stdout + again.stderr  # the run's own metadata: nothing redone


def test_agfsync_unlock_of_a_run_folder_removes_its_stale_lock(tmp_path):
    """A run folder holds no Snakefile: `agfsync unlock runs/NAME` names ours, and
    --directory, so that a config's run: cannot move the unlock elsewhere."""
    folder = tmp_path / "runs" / "exp"
    (folder / ".snakemake" / "locks").mkdir(parents=True)
    (folder / ".snakemake" / "locks" / "0.output.lock").write_text(str(folder / "results" / "x") + "\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "squeue").write_text("#!/bin/sh\n")  # no SLURM job is left
    (tmp_path / "bin" / "squeue").chmod(0o755)
    out = subprocess.run([sys.executable, "-m", "agfsync.cli", "unlock", str(folder)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "removing the stale lock (1 lock file(s))" in out.stdout
    assert not list((folder / ".snakemake" / "locks").glob("*.lock"))


def test_directory_wins_over_a_run_name(tmp_path):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"extends": "config/tiny.yaml", "run": "ignored"}))
    here = tmp_path / "here"
    here.mkdir()
    (here / "data").symlink_to(REPO / "data")  # --directory: inputs are the directory's own (README)
    _snakemake(["-n", "--quiet", "rules", "--directory", str(here), "--configfile", str(tmp_path / "exp.yaml")],
               tmp_path, tmp_path / "runs")
    assert (here / ".snakemake").is_dir()
    assert not (tmp_path / "runs").exists()


def test_commands_outside_the_workflow_read_the_run_folder_of_their_config(tmp_path):
    """agfsync generate / export-pairs / report default to the run folder's results."""
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"extends": "config/tiny.yaml", "run": "exp9"}))
    env = {**os.environ, runs.ENV: str(tmp_path / "runs")}
    agfsync = Path(sys.executable).parent / "agfsync"
    folder = tmp_path / "runs" / "exp9" / "results"
    for args, message in (
            (["generate", "--model", "sd15", "--benchmark", "tifa", "--out", str(tmp_path / "g")],
             f"{folder}/eval/tifa/prompts.jsonl: no prompt list of the tifa benchmark here; make it with "
             f"`snakemake results/eval/tifa/prompts.jsonl --configfile {tmp_path / 'exp.yaml'}`"),
            (["export-pairs", "--model", "sd15"], f"{folder}/sd15/pairs.jsonl: file not found")):
        out = subprocess.run([str(agfsync), args[0], "--config", str(tmp_path / "exp.yaml"), *args[1:]], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 2, out.stderr[-2000:]
        assert f"agfsync {args[0]}: error: {message}" in out.stderr


def test_report_of_a_named_run_reads_its_results_and_its_job_benchmarks(demo_run, tmp_path):
    """`agfsync report --config` of a named run, typed anywhere: the run folder's results/ and
    the compute costs of its benchmarks/ (not those of the directory it is typed in)."""
    import shutil

    folder = tmp_path / "runs" / "exp"
    for part in ("results", "benchmarks"):
        shutil.copytree(demo_run / part, folder / part)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"extends": "config/tiny.yaml", "run": "exp"}))
    env = {**os.environ, runs.ENV: str(tmp_path / "runs")}

    def report(name):
        out = subprocess.run([sys.executable, "-m", "agfsync.cli", "report", "--config", str(tmp_path / "exp.yaml"),
                              "--out", str(tmp_path / name)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return (tmp_path / name).read_text()

    assert "Compute: not measured" not in report("with.html")
    shutil.rmtree(folder / "benchmarks")  # the control: the same page without them says so
    assert "Compute: not measured" in report("without.html")
