"""A training run dies with what started it, and two runs never share a checkpoint
directory (agfsync.core.proclife, agfsync.train.launch.run_training).

The process trees here are what Snakemake builds for a rule's script: `snakemake` (a stand-in
named so, or the real one) -> `bash -c` -> the launcher -> torchrun agent -> workers in their
own session. One test runs the real thing on a tiny training (slow)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from agfsync.core import proclife
from agfsync.core.sections import Settings
from agfsync.train.launch import LaunchError, run_training

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]

# torchrun's part: an agent that starts a "worker" in a new session (as torch elastic does),
# the worker watching its agent as agfsync.train.trainer's workers do when started by torchrun.
AGENT = textwrap.dedent("""
    import subprocess, sys, time
    worker = ("import os, time; os.environ['TORCHELASTIC_RUN_ID'] = 'x'; "
              "from agfsync.core.proclife import exit_with_parent; "
              "exit_with_parent(poll_s=0.2, parent_is=lambda cmd: 'start_new_session=True' in ' '.join(cmd)); "
              "time.sleep(600)")
    subprocess.Popen([sys.executable, "-c", worker], start_new_session=True)
    time.sleep(600)
""")

# the rule's script: the real supervision loop of run_training around the stand-in agent
LAUNCHER = textwrap.dedent("""
    import logging, sys
    from agfsync.train import launch
    from agfsync.core import proclife
    logging.basicConfig(level=logging.INFO)
    lineage = proclife.Lineage()
    lock = proclife.DirLock(sys.argv[1], "stand-in").acquire()
    try:
        launch._supervise([sys.executable, "-c", sys.argv[2]], None, None, lineage, lock, "training of toy", 0.2, 3.0)
    finally:
        lock.release()
""")

# Snakemake's part: a process whose argv[1] is called `snakemake`, running the script through bash
SNAKEMAKE = textwrap.dedent("""
    import shlex, subprocess, sys
    subprocess.run(["bash", "-c", "set -euo pipefail; " + shlex.join(sys.argv[1:]) + "; true"])
""")


def family(root: psutil.Process, count: int, timeout: float = 30) -> list[psutil.Process]:
    """root's descendants (workers in their own session included), once there are `count`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = root.children(recursive=True)
        if len(kids) >= count:
            return kids
        time.sleep(0.1)
    raise AssertionError(f"expected {count} descendants, found {root.children(recursive=True)}")


def _running(process: psutil.Process) -> bool:
    """Running and not a zombie; a process that exits between the two reads is gone (the
    status read raised NoSuchProcess in CI on 2026-11-29)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if _running(p)]


def wait_gone(processes: list[psutil.Process], timeout: float = 10) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(processes)


@pytest.fixture
def stand_in(tmp_path):
    fake = tmp_path / "bin" / "snakemake"
    fake.parent.mkdir()
    fake.write_text(SNAKEMAKE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = []

    def start(*command):
        proc = subprocess.Popen([PYTHON, str(fake), *command], env=env, start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:  # whatever a failing test left behind (a worker outside the group outlives it)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_kill_9_of_snakemake_stops_the_launcher_torchrun_and_workers_in_their_own_session(stand_in, tmp_path):
    ckpt = tmp_path / "ckpt"
    snakemake = stand_in(PYTHON, "-c", LAUNCHER, str(ckpt), AGENT)
    # bash, launcher, agent, worker (bash may exec its last command: 3 or 4)
    descendants = family(psutil.Process(snakemake.pid), 4)
    assert any(os.getsid(p.pid) != snakemake.pid for p in descendants)  # the worker left the session
    assert json.loads(Path(f"{ckpt}.lock").read_text())["host"] == socket.gethostname()
    snakemake.kill()
    snakemake.wait()
    assert wait_gone(descendants) == []
    assert not Path(f"{ckpt}.lock").exists()  # released on the way out


def test_a_worker_exits_when_its_agent_is_killed(tmp_path):
    agent = subprocess.Popen([PYTHON, "-c", AGENT], env={**os.environ, "PYTHONPATH": str(REPO)})
    worker = family(psutil.Process(agent.pid), 1)
    agent.kill()
    agent.wait()
    try:
        assert wait_gone(worker, 5) == []
    finally:
        for p in alive(worker):
            p.kill()


def test_the_child_of_a_launcher_killed_with_sigkill_gets_sigterm():
    code = textwrap.dedent("""
        import subprocess, sys, time
        from agfsync.core.proclife import die_with_parent
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], preexec_fn=die_with_parent())
        time.sleep(600)
    """)
    launcher = subprocess.Popen([PYTHON, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
    child = family(psutil.Process(launcher.pid), 1)
    launcher.kill()
    launcher.wait()
    assert wait_gone(child, 5) == []


# an agent that, like torchrun, takes a while to stop its workers after SIGTERM
SLOW_AGENT = textwrap.dedent("""
    import signal, sys, time
    def stop(signum, frame):
        time.sleep(3)  # torchrun gives its workers a grace period
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    open(READY, "w").close()
    time.sleep(600)
""")


def test_the_lock_stays_held_while_the_training_of_a_sigkilled_launcher_still_stops(stand_in, tmp_path):
    ckpt, ready = tmp_path / "ckpt", tmp_path / "agent-ready"
    snakemake = stand_in(PYTHON, "-c", LAUNCHER, str(ckpt), SLOW_AGENT.replace("READY", repr(str(ready))))
    descendants = family(psutil.Process(snakemake.pid), 3)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:  # its SIGTERM handler is in place
        time.sleep(0.05)
    launcher = next(p for p in descendants if p.cmdline()[:2] == [PYTHON, "-c"] and "_supervise" in p.cmdline()[2])
    agent = next(p for p in launcher.children())
    launcher.kill()  # no cleanup at all: the kernel sends the agent SIGTERM, and it takes 3 s to stop
    time.sleep(0.5)
    assert agent.is_running()
    with pytest.raises(proclife.LockHeld, match=rf"^{ckpt} is in use by pid {launcher.pid} on host "):
        proclife.DirLock(ckpt).acquire()  # a rerun now would race the old workers
    assert wait_gone([agent], 10) == []
    proclife.DirLock(ckpt).acquire().release()  # once it is gone, the lock is stale and taken over


def test_sigterm_to_the_launcher_stops_its_tree_and_releases_the_lock(stand_in, tmp_path):
    ckpt = tmp_path / "ckpt"
    snakemake = stand_in(PYTHON, "-c", LAUNCHER, str(ckpt), AGENT)
    descendants = family(psutil.Process(snakemake.pid), 4)
    launcher = next(p for p in descendants if "_supervise" in " ".join(p.cmdline()))
    launcher.terminate()
    assert wait_gone(descendants) == []
    assert not Path(f"{ckpt}.lock").exists()
    assert snakemake.wait(timeout=10) == 0  # the stand-in's bash ends with `true`


def test_the_launcher_lives_for_the_processes_up_to_the_outermost_snakemake_only():
    me = psutil.Process()
    chain = me.parents()
    watched = proclife.watched_processes()
    snakemakes = [i for i, p in enumerate(chain) if proclife.is_snakemake(p.cmdline())]
    assert watched == chain[:(snakemakes[-1] if snakemakes else 0) + 1]
    assert proclife.is_snakemake(["/x/.venv/bin/python", "/x/.venv/bin/snakemake", "--cores", "2"])
    assert proclife.is_snakemake(["python3", "-m", "snakemake", "--target-jobs", "a"])
    assert proclife.is_snakemake(["snakemake"])
    assert not proclife.is_snakemake(["slurmstepd: [123.0]"]) and not proclife.is_snakemake(["bash", "-c", "snakemake"])


# -- the checkpoint directory lock -------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from agfsync.core.proclife import DirLock
    DirLock(sys.argv[1], "first run").acquire()
    print("held", flush=True)
    time.sleep(600)
""")

# what the launcher reads before it takes the lock (the rest of a stage's settings is never reached)
CPU_SETTINGS = Settings.from_dict(
    {"device": "cpu", "train": {"gpus": 1, "nodes": 1, "launch": {"join_timeout_s": 600}}}, partial=True)


def test_a_second_run_on_a_held_checkpoint_directory_is_refused_naming_the_holder(tmp_path):
    ckpt = tmp_path / "results" / "sd15" / "train_checkpoints"
    first = subprocess.Popen([PYTHON, "-c", HOLD, str(ckpt)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert first.stdout.readline() == "held\n"
        holder = json.loads(Path(f"{ckpt}.lock").read_text())
        assert holder["pid"] == first.pid and holder["command"] == "first run"
        with pytest.raises(LaunchError) as err:
            run_training(CPU_SETTINGS, "sd15", tmp_path / "cache", tmp_path / "out", ckpt)
        assert str(err.value) == (
            f"{ckpt} is in use by pid {first.pid} on host {socket.gethostname()} since {holder['started']} "
            f"(another train_dpo run?); stop it first, or delete {ckpt}.lock if that process is gone")
        assert not (ckpt / "stage_config.json").exists()  # refused before touching anything
    finally:
        first.kill()
        first.wait()
    # the holder was killed: its lock is stale (flock released with it) and taken over
    with proclife.DirLock(ckpt, "second run") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.Popen([PYTHON, "-c", "pass"])
    dead.wait()
    ckpt = tmp_path / "ckpt"
    Path(f"{ckpt}.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                "started": "2026-11-28T23:40:00Z", "command": "old"}))
    caplog.set_level("WARNING", logger="agfsync.core.proclife")
    with proclife.DirLock(ckpt, "new"):
        pass
    assert caplog.messages == [f"{ckpt}.lock: taking over the stale lock of pid {dead.pid} on host "
                               f"{socket.gethostname()} since 2026-11-28T23:40:00Z (that process is gone)"]


def test_a_lock_of_another_host_is_stale_without_heartbeat_and_held_with_one(tmp_path, caplog):
    ckpt = tmp_path / "ckpt"
    path = Path(f"{ckpt}.lock")
    record = {"pid": 1, "host": "n1", "started": "2026-11-28T23:40:00Z", "command": "elsewhere"}
    path.write_text(json.dumps(record))
    os.utime(path, (time.time() - 600, time.time() - 600))
    caplog.set_level("WARNING", logger="agfsync.core.proclife")
    with proclife.DirLock(ckpt, "new", heartbeat_s=0.2, stale_s=1.0):
        pass
    assert caplog.messages == [f"{path}: taking over the stale lock of pid 1 on host n1 since "
                               "2026-11-28T23:40:00Z (no heartbeat for 600 s)"]
    # a holder on another host whose file system has no cluster-wide flock: its heartbeat shows it alive
    path.write_text(json.dumps(record))
    beating = subprocess.Popen([PYTHON, "-c", f"import os, time\nwhile True: os.utime({str(path)!r}); time.sleep(0.1)"])
    try:
        with pytest.raises(proclife.LockHeld) as err:
            proclife.DirLock(ckpt, "new", heartbeat_s=0.2, stale_s=2.0).acquire()
        assert str(err.value).startswith(f"{ckpt} is in use by pid 1 on host n1 since 2026-11-28T23:40:00Z")
    finally:
        beating.kill()
        beating.wait()


# -- the real thing ----------------------------------------------------------------------------

SNAKEFILE = textwrap.dedent("""
    rule train:
        output: directory("out")
        log: "train.log"
        params: checkpoints="ckpt"
        script: "train.py"
""")

SCRIPT = textwrap.dedent("""
    from agfsync.core.logs import job_logging
    from agfsync.core.sections import Settings
    from agfsync.train.launch import run_training
    settings = Settings.from_json(open("settings.json").read())
    with job_logging(snakemake.log[0]):
        run_training(settings, "sd15", "{cache}", snakemake.output[0], snakemake.params.checkpoints,
                     log_path=snakemake.log[0])
""")


@pytest.mark.slow
def test_kill_9_of_a_real_snakemake_stops_a_real_training(demo_config, tiny_models, tmp_path):
    from train_helpers import toy_cache, toy_config, train_settings

    cache = toy_cache(tmp_path / "cache")
    work = tmp_path / "work"
    work.mkdir()
    cfg = toy_config(demo_config, tiny_models, checkpoint_every=2)
    cfg["models"]["sd15"]["train"]["steps"] = 10000  # still training when Snakemake is killed
    (work / "settings.json").write_text(train_settings(cfg).to_json())  # rule train_dpo's settings
    (work / "Snakefile").write_text(SNAKEFILE)
    (work / "train.py").write_text(SCRIPT.replace("{cache}", str(cache)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    snakemake = subprocess.Popen([str(Path(PYTHON).parent / "snakemake"), "--cores", "2"], cwd=work, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    descendants = []
    try:
        metrics = work / "ckpt" / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
            assert snakemake.poll() is None, (work / "train.log").read_text()[-3000:]
            time.sleep(0.5)
        descendants = psutil.Process(snakemake.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in descendants)
        assert "torch.distributed.run" in names and names.count("agfsync.train.trainer") >= 3  # agent + 2 workers
        snakemake.kill()
        snakemake.wait()
        assert wait_gone(descendants, 30) == []
        lines = len(metrics.read_text().splitlines())
        time.sleep(3)
        assert len(metrics.read_text().splitlines()) == lines  # nobody writes any more
        assert not (work / "ckpt.lock").exists()
        assert "which started this run, is gone: stopping the training" in (work / "train.log").read_text()
    finally:  # what a failure left behind, workers outside the process group included
        for p in alive(descendants):
            p.kill()
        try:
            os.killpg(snakemake.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- the Snakemake lock a kill -9 leaves (make unlock) -------------------------------------------

SLOW_SNAKEFILE = textwrap.dedent("""
    rule slow:
        output: "done"
        shell: "sleep $(cat delay) && touch {output}"
""")


def test_after_kill_9_make_unlock_removes_a_stale_snakemake_lock_only(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "Snakefile").write_text(SLOW_SNAKEFILE)
    (work / "delay").write_text("600")
    bin_snakemake = str(Path(PYTHON).parent / "snakemake")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    (tmp_path / "bin").mkdir()
    run = subprocess.Popen([bin_snakemake, "--cores", "1"], cwd=work, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list((work / ".snakemake" / "locks").glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(run.pid, signal.SIGKILL)  # Snakemake and its job, as a reboot would
    run.wait()
    (work / "delay").write_text("0")
    rerun = subprocess.run([bin_snakemake, "--cores", "1"], cwd=work, capture_output=True, text=True)
    assert rerun.returncode != 0 and "Directory cannot be locked" in rerun.stderr  # what Snakemake does by itself

    def unlock():
        return subprocess.run([PYTHON, "-m", "agfsync.cli", "unlock"], cwd=work, capture_output=True, text=True,
                              env=env)

    # a Snakemake that still runs in this directory: its lock is not stale
    fake = tmp_path / "bin" / "snakemake"
    fake.write_text("import time; time.sleep(600)")
    live = subprocess.Popen([PYTHON, str(fake), "--cores", "1"], cwd=work)
    try:
        result = unlock()
        assert result.returncode == 1
        assert result.stderr == (f"Snakemake still runs in {work}: pid {live.pid} ({PYTHON} {fake} --cores 1). Its lock "
                                 "is not stale: let it finish or stop it, then run `agfsync unlock` again\n")
    finally:
        live.kill(), live.wait()
    # SLURM jobs of the dead run still queued or running
    squeue = tmp_path / "bin" / "squeue"
    squeue.write_text(f"#!/bin/sh\necho '777|RUNNING|rule_train_dpo_wildcards_sdxl|{work}'\n"
                      "echo '778|RUNNING|rule_x|/elsewhere'\n")
    squeue.chmod(0o755)
    result = unlock()
    assert result.returncode == 1
    assert result.stderr == (f"SLURM jobs started from {work} are still pending or running: 777 "
                             "(rule_train_dpo_wildcards_sdxl, RUNNING). They belong to the Snakemake run that died: "
                             "wait for them to end or cancel them (scancel 777), then run `agfsync unlock` again\n")
    squeue.write_text("#!/bin/sh\necho '778|RUNNING|rule_x|/elsewhere'\n")
    # nothing left: unlocked, and the same command as before now runs
    result = unlock()
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"no Snakemake runs in {work} on {socket.gethostname()} and no SLURM job of it "
                                    "is left: removing the stale lock (1 lock file(s))\n")
    rerun = subprocess.run([bin_snakemake, "--cores", "1"], cwd=work, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (work / "done").exists()
    assert unlock().stdout == f"no Snakemake lock in {work}: nothing to unlock\n"
