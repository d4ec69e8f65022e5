"""The workflow on a real SLURM cluster (tests/slurm_cluster.py: slurmctld and two slurmd
nodes on 127.0.0.1), through `snakemake --profile slurm` as a user types it.

The test overlay is what differs from a real cluster: the partition comes from
AGFSYNC_SLURM_PARTITION, job status from squeue (no accounting database, so no sacct), no
account, and the demo config's device: cpu makes every job a CPU job (no GPU requested).
Under CI these tests must run; elsewhere they skip when root or the packages are missing.

Both tests start from the local demo run of the session (conftest.demo_run) and make SLURM
rebuild part of it, so they compare SLURM's outputs with the local ones without running the
demo a second time: every rule kind downstream of the candidates runs as a SLURM job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from slurm_cluster import SlurmCluster
from workflow_helpers import DEMO, SNAKEMAKE, job_counts

pytestmark = pytest.mark.slow

OVERLAY = ["--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), nodes=2).start()
    yield cluster
    cluster.stop()


def profile_run(cluster: SlurmCluster, cwd: Path, *args: str, env: dict | None = None,
                timeout: float = 2400) -> subprocess.Popen:
    # Two nodes of 2 CPUs each on a 2-core machine: two jobs share the cores, and OpenMP's
    # default spin-waiting then makes each 10x slower (docs/NOTES.md); passive waiting does
    # not change results, only the time.
    env = {**os.environ, **cluster.env, "AGFSYNC_SLURM_PARTITION": "debug", "OMP_WAIT_POLICY": "PASSIVE",
           **(env or {})}
    return subprocess.Popen([SNAKEMAKE, "--profile", "slurm", *args, *OVERLAY], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Saboteur(threading.Thread):
    """scancels, mid-run, one candidate-generation array task after it has run a few
    seconds, and the sdxl training job right after its step-10 checkpoint (of 20 steps)."""

    def __init__(self, cluster: SlurmCluster, cwd: Path):
        super().__init__(daemon=True)
        self.cluster, self.cwd, self.done = cluster, cwd, threading.Event()
        self.cancelled: dict[str, str] = {}  # what -> SLURM job id
        self.errors: list[str] = []

    def scancel(self, what: str, job_id: str) -> None:
        subprocess.run(["scancel", job_id], env={**os.environ, **self.cluster.env}, check=True)
        self.cancelled[what] = job_id

    def run(self) -> None:
        first_seen: dict[str, float] = {}
        latest = self.cwd / "results/sdxl/train_checkpoints/latest"
        try:
            while not self.done.is_set() and len(self.cancelled) < 2:
                running = [j for j in self.cluster.jobs() if j["state"] == "RUNNING"]
                for job in running:
                    first_seen.setdefault(job["id"], time.monotonic())
                if "shard" not in self.cancelled:
                    for job in running:
                        if ("rule_candidates_generate" in job["comment"]
                                and time.monotonic() - first_seen[job["id"]] > 3):
                            self.scancel("shard", job["id"])
                            break
                train = [j for j in running if j["comment"] == "rule_train_dpo_wildcards_sdxl"]
                if "train" not in self.cancelled and train:
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline and not self.done.is_set():  # stat only: react in ms
                        if latest.exists() and latest.read_text().strip() == "step000010":
                            self.scancel("train", train[0]["id"])
                            break
                        time.sleep(0.02)
                time.sleep(0.3)
        except Exception as err:  # reported by the test, not lost in a thread
            self.errors.append(repr(err))


def submissions(output: str) -> Counter:
    """How often each Snakemake job id went to sbatch (alone or as an array member)."""
    counts = Counter(re.findall(r"Job (\d+) has been submitted with SLURM jobid", output))
    for ids in re.findall(r"Submitted array job with Snakemake IDs ([\d,]+) and SLURM job ID", output):
        counts.update(ids.split(","))
    return counts


def result_files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted((root / "results").rglob("*")) if p.is_file()}


# What may differ between two runs of the same config: training timings and memory, and
# whether the training was resumed (the SLURM run's was, on purpose).
RUN_FACTS = {"seconds", "wall_seconds", "peak_memory_bytes", "resumed_from_step"}


def without_run_facts(value):
    if isinstance(value, dict):
        return {k: without_run_facts(v) for k, v in value.items() if k not in RUN_FACTS}
    return [without_run_facts(v) for v in value] if isinstance(value, list) else value


def comparable(path: Path):
    """A result file's content, less RUN_FACTS (JSON) or the training time and the Compute section's
    wall times and GPU-hours (report: they are the run's own)."""
    if path.suffix == ".json":
        return without_run_facts(json.loads(path.read_text()))
    if path.suffix == ".jsonl" and path.parent.name in ("agfsync", "train_checkpoints"):
        return [without_run_facts(json.loads(line)) for line in path.read_text().splitlines()]
    if path.suffix == ".html":
        text = re.sub(r"(loss \w+), [\d.]+ s\.", r"\1, <time>.", path.read_text())
        text = re.sub(r'<h2 id="compute">.*?(?=<p class="note" id="provenance">)', "<compute>", text, flags=re.S)
        return re.sub(r'<p class="note" id="compute-provenance">.*?</p>', "<compute totals>", text, flags=re.S)
    return path.read_bytes()


# What the SLURM run rebuilds: one sdxl candidate shard of a copy of the finished local demo is
# forced (--forcerun; a deleted intermediate file would not be redone, Snakemake treats it as
# temporary), so it and every rule downstream of it run again, each as a SLURM job: its scores,
# the pairs, the training cache, the training (cancelled after its step-10 checkpoint, resumed),
# the fine-tuned model's evaluation images and scores, the metrics, the judge and the report.
FORCED = "results/sdxl/candidates/shard-00001.tar"
# ... and what it must leave alone: upstream files and everything of the other model and of the
# base model's evaluation
UNTOUCHED = ("results/prompts/", "results/sd15/", "results/sdxl/eval/base/", "results/sdxl/candidates/shard-00000.tar",
             "results/eval/")


@pytest.mark.timeout(2400)
def test_rerun_through_slurm_survives_cancellations_and_equals_the_local_run(cluster, demo_run, tmp_path):
    cwd = tmp_path / "w"  # the finished local demo
    subprocess.run(["cp", "-a", str(demo_run), str(cwd)], check=True)
    before = {name: path.stat().st_mtime_ns for name, path in result_files(cwd).items()}
    # without its checkpoints: the forced training (same pairs, same cache) would otherwise
    # resume at its last step, as it should, and there would be nothing to cancel
    subprocess.run(["rm", "-rf", str(cwd / "results/sdxl/train_checkpoints")], check=True)
    saboteur = Saboteur(cluster, cwd)
    saboteur.start()
    start = time.monotonic()
    # the profile as typed, plus job arrays for the scorer rules (the profile's opt-in)
    run = profile_run(cluster, cwd, *DEMO, "--forcerun", FORCED, "--slurm-array-jobs", "candidates_score,eval_score")
    output, _ = run.communicate(timeout=2000)
    saboteur.done.set()
    minutes = (time.monotonic() - start) / 60
    (tmp_path / "snakemake.out").write_text(output)
    assert run.returncode == 0, output[-5000:]
    assert not saboteur.errors, saboteur.errors
    print(f"\nSLURM rerun: {minutes:.1f} min, cancelled {saboteur.cancelled}")

    # Every job but the local `all` went through sbatch, once; the two cancelled ones twice.
    planned = job_counts(output)
    assert planned["candidates_generate"] == 1 and planned["train_dpo"] == 1 and planned["eval_score"] >= 3, planned
    assert "prompts_generate" not in planned and "models_tiny" not in planned, planned
    counts = submissions(output)
    assert sum(planned.values()) - planned["all"] == len(counts), (planned, counts)
    assert sorted(Counter(counts.values()).items()) == [(1, len(counts) - 2), (2, 2)], counts
    assert set(saboteur.cancelled) == {"shard", "train"}, saboteur.cancelled
    states = {job["id"]: job["state"] for job in cluster.jobs()}
    assert [states[job_id] for job_id in saboteur.cancelled.values()] == ["CANCELLED", "CANCELLED"]
    arrays = re.findall(r"Submitted array job with Snakemake IDs [\d,]+ and SLURM job ID (\d+)", output)
    arrayed = {job["comment"].split("_wildcards")[0] for job in cluster.jobs() if job["id"].split("_")[0] in arrays}
    assert "rule_eval_score" in arrayed and arrayed <= {"rule_candidates_score", "rule_eval_score"}, arrayed
    assert list((cwd / "logs/slurm/rule_train_dpo").rglob("*.log"))  # SLURM's own log per job, named by job id

    # The retried training resumed from its checkpoint instead of starting over.
    log = (cwd / "logs/sdxl/train_dpo.log").read_text()
    assert "resumed from" in log and "at step 10" in log, log[-3000:]

    # The same outputs as the local run: byte for byte (the rebuilt shard, scores, pairs, the trained
    # weights of the resumed training too), up to training timings; upstream files not rewritten.
    mine, local = result_files(cwd), result_files(demo_run)
    assert mine.keys() == local.keys()
    different = [name for name in mine if comparable(mine[name]) != comparable(local[name])]
    assert different == [], different
    rebuilt = sorted(name for name in mine if mine[name].stat().st_mtime_ns != before[name])
    assert FORCED in rebuilt and "results/sdxl/agfsync/unet/diffusion_pytorch_model.safetensors" in rebuilt
    assert [name for name in rebuilt if name.startswith(UNTOUCHED)] == [], rebuilt
    exact = [name for name in mine if mine[name].read_bytes() == local[name].read_bytes()]
    # only what records training time differs in bytes: the report, sdxl's summary.json and two
    # metrics.jsonl (model and checkpoints), the manifests of the 2 kept checkpoints (their `last`
    # metrics and wall time)
    timed = [name for name in mine if name not in exact]
    assert len(timed) <= 6 and all(name.endswith((".html", "metrics.jsonl", "summary.json", "COMPLETE.json"))
                                   for name in timed), timed
    assert json.loads((cwd / "results/sdxl/agfsync/summary.json").read_text())["resumed_from_step"] == 10

    again = profile_run(cluster, cwd, *DEMO, "-n")
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and "Nothing to be done" in out, out[-3000:]


@pytest.mark.timeout(1500)
def test_training_on_two_nodes_through_srun_matches_two_local_processes(cluster, demo_run, tmp_path, monkeypatch):
    """train.nodes 2 x train.gpus 1: one sbatch job holding n1 and n2, the launcher's
    `srun torchrun` with a c10d rendezvous on n1; the weights equal those of one node
    running 2 processes (`torchrun --standalone`) on the same pair cache."""
    import torch
    from safetensors.torch import load_file

    from agfsync.core.config import load_config
    from agfsync.core.sections import Settings
    from agfsync.train.launch import run_training

    cwd = tmp_path / "w"  # the finished local demo, less sd15's training
    subprocess.run(["cp", "-a", str(demo_run), str(cwd)], check=True)
    for done in ("results/sd15/agfsync", "results/sd15/train_checkpoints", "logs/sd15/train_dpo.log"):
        subprocess.run(["rm", "-rf", str(cwd / done)], check=True)
    cache = cwd / "results/sd15/train_cache"
    overlay = {"extends": "config/tiny.yaml", "train": {"nodes": 2, "gpus": 1}}
    (cwd / "config/two_nodes.yaml").write_text(yaml.safe_dump(overlay))
    dry = profile_run(cluster, cwd, "-n", "results/sd15/agfsync", "--configfile", "config/two_nodes.yaml")
    out, _ = dry.communicate(timeout=600)
    assert dry.returncode == 0, out[-3000:]
    assert job_counts(out) == {"train_dpo": 1}, out[-3000:]
    assert "nodes=2, tasks=2, mpi=srun, tasks_per_gpu=0" in out, out[-3000:]
    run = profile_run(cluster, cwd, "results/sd15/agfsync", "--configfile", "config/two_nodes.yaml")
    out, _ = run.communicate(timeout=1200)
    log = (cwd / "logs/sd15/train_dpo.log").read_text() if (cwd / "logs/sd15/train_dpo.log").exists() else ""
    assert run.returncode == 0, out[-3000:] + log[-3000:]
    assert "2 node(s) (n1, n2) x 1 process(es), rendezvous at 127.0.0.1:" in log
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1" in log
    placed = re.findall(r"train: rank (\d) of 2 on (n\d), backend gloo", log)
    assert sorted(rank for rank, _ in placed) == ["0", "1"] and sorted(node for _, node in placed) == ["n1", "n2"]
    summary = json.loads((cwd / "results/sd15/agfsync/summary.json").read_text())
    assert summary["processes"] == 2

    monkeypatch.chdir(cwd)  # the config's paths (tiny models) are relative to the run directory
    cfg = load_config("config/two_nodes.yaml")
    cfg["train"].update({"nodes": 1, "gpus": 2})
    local = tmp_path / "local"
    local.mkdir()
    # every process runs cpu_threads threads whatever OMP_NUM_THREADS says: one node x 2 processes equals 2 x 1
    assert re.search(r"OMP_NUM_THREADS=2 per process \(config cpu_threads\)", log)
    run_training(Settings.from_dict(cfg), "sd15", cache, local / "out", local / "ckpt", log_path=local / "train.log",
                 env={**os.environ, "OMP_NUM_THREADS": "1"})
    a = load_file(str(cwd / "results/sd15/agfsync/unet/diffusion_pytorch_model.safetensors"))
    b = load_file(str(local / "out/unet/diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.timeout(900)
def test_a_named_run_through_slurm_writes_in_its_own_folder(cluster, tmp_path):
    """`run: NAME` through `--profile slurm`, typed from the checkout as a user does (the
    Snakefile found as workflow/Snakefile): the SLURM jobs start in the run folder (its
    absolute path), parse the Snakefile again there and write into it, SLURM's own job logs
    included; the checkout gets nothing of the run but Snakemake's main log."""
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"extends": "config/tiny.yaml", "run": "slurm-exp"}))
    target = "results/prompts/qa.jsonl"
    stamp = lambda path: path.stat().st_mtime_ns if path.exists() else None  # noqa: E731
    before = {p: stamp(repo / p) for p in (target, "logs/slurm", "logs/prompts/qa_generate.log")}
    # a relative runs root: every parse of the Snakefile (sbatch step, srun jobstep) must land in the same folder
    run = profile_run(cluster, repo, target, "--configfile", str(tmp_path / "exp.yaml"),
                      env={"AGFSYNC_RUNS_DIR": os.path.relpath(tmp_path / "runs", repo)})
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-3000:]
    assert len(submissions(out)) == 2, out[-3000:]  # prompts_generate and qa_generate, each a SLURM job
    folder = tmp_path / "runs" / "slurm-exp"
    for made in (target, "logs/prompts/qa_generate.log", "benchmarks/prompts/prompts_generate.tsv"):
        assert (folder / made).is_file(), made
    assert sorted(p.parent.name for p in (folder / "logs" / "slurm").rglob("*.log")) == [
        "rule_prompts_generate", "rule_qa_generate"]
    assert {p: stamp(repo / p) for p in before} == before
