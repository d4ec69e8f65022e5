"""Launch of the DPO trainer (rule train_dpo).

One node (`train.nodes: 1`): `torchrun --standalone` with one process per GPU
(`train.gpus`; gloo processes on a CPU).

Several nodes (`train.nodes > 1`, SLURM only): the rule's SLURM job
holds the nodes (one task per node, `train.gpus` GPUs each) and this launcher runs
`srun --nodes N --ntasks N --ntasks-per-node 1 torchrun ...`: one torchrun agent per node,
meeting at a c10d rendezvous on the first node of the allocation. The host is that node's
NodeAddr (`scontrol show node`), the port `train.launch.rendezvous_port`, else MASTER_PORT,
else 29500 + SLURM_JOB_ID % 10000 (jobs sharing a node do not collide), the rendezvous id
the job id. A node that has not joined within `train.launch.join_timeout_s` fails the job
with an error that says so.

The stage's typed settings (agfsync.core.sections.Settings, `settings.to_json()`) are written
to `<checkpoints>/stage_config.json`, which the trainer reads back with `Settings.from_json`;
the children's output goes to the rule's log. Everything up to the subprocess call is pure (no torch).

Lifetime (agfsync.core.proclife): one run at a time per checkpoint directory (`<checkpoints>.lock`,
taken by this launcher, which runs once per job whatever the node count; a second run fails
naming the holder, a lock left by a dead run is taken over with a warning), and the
training dies with what started it: torchrun (or srun) gets SIGTERM from the kernel if this
launcher dies, the workers exit when their torchrun agent is gone, and this launcher stops
the whole tree when Snakemake (or any process between it and Snakemake) is gone, on SIGTERM,
or on any error."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from agfsync.core import proclife
from agfsync.core.dag import launcher_kind

if TYPE_CHECKING:
    from agfsync.core.sections import Settings, TrainSettings

log = logging.getLogger(__name__)

RENDEZVOUS_FAILURES = ("RendezvousTimeoutError", "RendezvousClosedError", "RendezvousConnectionError")


class LaunchError(RuntimeError):
    """The training cannot be launched as configured (raised before any process starts)."""


def rendezvous_port(train: TrainSettings, env: dict) -> int:
    port = train.launch.rendezvous_port
    if port:
        return int(port)
    if env.get("MASTER_PORT"):
        return int(env["MASTER_PORT"])
    return 29500 + int(env["SLURM_JOB_ID"]) % 10000


def slurm_job(env: dict) -> dict:
    """`scontrol show job` of this job as key=value pairs (NodeList, NumNodes, CPUs/Task...).
    Asked of the controller because Snakemake's job step removes most SLURM_* variables
    (SLURM_JOB_NODELIST, SLURM_CPUS_PER_TASK, ...) before it runs a job's command."""
    out = subprocess.run(["scontrol", "show", "job", "-o", env["SLURM_JOB_ID"]], capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        raise LaunchError(f"scontrol show job {env['SLURM_JOB_ID']} failed: {out.stderr.strip()}")
    return dict(field.split("=", 1) for field in out.stdout.split() if "=" in field)


def slurm_nodes(nodelist: str, env: dict) -> list[str]:
    """A node list expression (n[1-2],gpu07) as node names, in SLURM's order."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, env=env)
    if out.returncode != 0 or not out.stdout.split():
        raise LaunchError(f"cannot expand the node list {nodelist!r}: {out.stderr.strip()}")
    return out.stdout.split()


def node_address(node: str, env: dict) -> str:
    """The address SLURM reaches a node at (NodeAddr; the name itself when not shown)."""
    out = subprocess.run(["scontrol", "show", "node", node], capture_output=True, text=True, env=env)
    for field in out.stdout.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1]
    return node


def srun_plan(train: TrainSettings, env: dict) -> dict:
    """Nodes, rendezvous host and port for a multi-node launch inside a SLURM allocation."""
    nodes = train.nodes
    if not env.get("SLURM_JOB_ID"):
        raise LaunchError(f"train.nodes is {nodes}: multi-node training runs inside a SLURM "
                          "job (snakemake --profile slurm), but SLURM_JOB_ID is not set")
    job = slurm_job(env)
    names = slurm_nodes(job.get("NodeList") or env.get("SLURM_JOB_NODELIST", ""), env)
    if len(names) < nodes:
        raise LaunchError(f"train.nodes is {nodes} but SLURM job {env['SLURM_JOB_ID']} holds {len(names)} "
                          f"node(s) ({', '.join(names)})")
    cpus = job.get("CPUs/Task", "")
    return {"nodes": nodes, "hosts": names[:nodes], "host": node_address(names[0], env),
            "port": rendezvous_port(train, env), "job_id": env["SLURM_JOB_ID"],
            "cpus_per_task": int(cpus) if cpus.isdigit() else None}


def torchrun_command(processes: int, args: list[str], plan: dict | None = None, join_timeout_s: int = 600) -> list[str]:
    """The command line: `torchrun --standalone` (plan None) or `srun ... torchrun` with c10d."""
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    train = ["-m", "agfsync.train.trainer", *args]
    if plan is None:
        return [*torchrun, "--standalone", f"--nproc-per-node={processes}", *train]
    n = plan["nodes"]
    srun = ["srun", f"--nodes={n}", f"--ntasks={n}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            f"--nodelist={','.join(plan['hosts'])}"]
    if plan.get("cpus_per_task"):  # since Slurm 22.05 srun does not inherit the job's --cpus-per-task
        srun.append(f"--cpus-per-task={plan['cpus_per_task']}")
    return [*srun, *torchrun, f"--nnodes={n}", f"--nproc-per-node={processes}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={plan['host']}:{plan['port']}", f"--rdzv-id=agfsync-{plan['job_id']}",
            f"--rdzv-conf=join_timeout={join_timeout_s}", "--max-restarts=0", *train]


def check_gpus(settings: Settings, processes: int) -> None:
    """Fail before launching when the config asks for more GPUs than this node has."""
    if settings.device == "cpu":
        return
    import torch

    available = torch.cuda.device_count()
    if processes > available and (settings.device == "cuda" or available > 0 or processes > 1):
        raise RuntimeError(
            f"train.gpus asks for {processes} GPU(s) per node but this node has {available} CUDA device(s); "
            "lower train.gpus, or set device: cpu to train with CPU processes")


def _read_from(path, offset: int) -> str:
    """What was appended to a log since `offset` (this launch's output only)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_training(settings: Settings, model_name: str, cache_dir, out_dir, checkpoints, *, log_path=None,
                 processes: int | None = None, stop_after: int | None = None, env: dict | None = None,
                 poll_s: float = 1.0, grace_s: float = proclife.GRACE_S, config_digest: str | None = None) -> int:
    """Train through torchrun (or srun torchrun) and wait for it. The run holds
    `<checkpoints>.lock` from before the stage config is written until its children are
    gone (a second run on the same checkpoints fails at once, naming the holder), and
    dies with the processes that started it: when one of them is gone (a `kill -9` of
    Snakemake, see agfsync.core.proclife), on SIGTERM (scancel, Snakemake stopping its jobs)
    or on any exception, torchrun and its workers are stopped (SIGTERM, then SIGKILL
    after `grace_s`) before this returns or raises.

    `settings`: the stage's typed settings (seed, device, cpu_threads, models.<model_name>,
    train), written to `<checkpoints>/stage_config.json` for the trainer. `config_digest`:
    agfsync.core.config.config_digest of the full config for this model, recorded in
    summary.json as `config_hash` (null when not given)."""
    env = dict(os.environ if env is None else env)
    train = settings.train
    kind = launcher_kind(train)
    plan = srun_plan(train, env) if kind == "srun" else None
    processes = processes or train.gpus
    if plan is None:
        check_gpus(settings, processes)  # on several nodes each rank checks its own node
    checkpoints = Path(checkpoints)
    stage_config = checkpoints / "stage_config.json"
    args = ["--stage-config", str(stage_config), "--model", model_name, "--cache", str(cache_dir),
            "--out", str(out_dir), "--checkpoints", str(checkpoints)]
    if stop_after is not None:
        args += ["--stop-after", str(stop_after)]
    if config_digest is not None:
        args += ["--config-digest", config_digest]
    join_timeout = train.launch.join_timeout_s
    command = torchrun_command(processes, args, plan, join_timeout)
    what = f"training of {model_name}"
    lineage = proclife.Lineage()  # before anything starts: who this run lives for
    try:
        lock = proclife.DirLock(checkpoints, shlex.join(command)).acquire()  # one launcher per run, on any node count
    except proclife.LockHeld as err:
        raise LaunchError(str(err)) from None
    try:
        checkpoints.mkdir(parents=True, exist_ok=True)
        stage_config.write_text(settings.to_json())
        if plan:
            log.info("train: %d node(s) (%s) x %d process(es), rendezvous at %s:%d", plan["nodes"],
                     ", ".join(plan["hosts"]), processes, plan["host"], plan["port"])
        log.info("train: %s", shlex.join(command))
        # Each process runs the config's cpu_threads (not a share of the machine's cores, nor an inherited
        # OMP_NUM_THREADS): on a CPU the thread count changes float sums, and so the trained weights; the same
        # count in every process keeps one node x 2 processes equal to two nodes x 1.
        threads = int(settings.cpu_threads)
        env["OMP_NUM_THREADS"] = str(threads)
        log.info("train: OMP_NUM_THREADS=%d per process (config cpu_threads)", threads)
        env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # a dead rank fails the job instead of hanging it
        start = 0
        if log_path:
            with open(log_path, "a") as handle:
                start = handle.tell()
                returncode = _supervise(command, env, handle, lineage, lock, what, poll_s, grace_s)
        else:
            returncode = _supervise(command, env, None, lineage, lock, what, poll_s, grace_s)
    finally:
        lock.release()
    if returncode != 0:
        where = f"see {log_path}" if log_path else "see the output"
        if plan and log_path and any(name in _read_from(log_path, start) for name in RENDEZVOUS_FAILURES):
            raise RuntimeError(
                f"training of {model_name}: not all {plan['nodes']} node(s) ({', '.join(plan['hosts'])}) joined the "
                f"rendezvous at {plan['host']}:{plan['port']} within {join_timeout} s "
                f"(train.launch.join_timeout_s); a node that cannot reach that address or failed to start "
                f"stops the job ({where}); checkpoints in {checkpoints} are kept")
        raise RuntimeError(f"training of {model_name} failed (exit {returncode}); {where}"
                           f"; checkpoints in {checkpoints} are kept and a rerun resumes from the latest")
    return returncode


class _Terminated(Exception):
    """SIGTERM arrived (raised by the handler run_training installs while it waits)."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _supervise(command, env, output, lineage, lock, what: str, poll_s: float, grace_s: float) -> int:
    """Run the command to its end, unless a watched process goes or SIGTERM comes first:
    then stop it and its whole tree and raise."""
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    proc = None
    try:
        # torchrun inherits the lock's descriptor, and a flock lasts while any descriptor of it is open: if this
        # launcher is SIGKILLed, the lock stays held until torchrun has stopped its workers (its grace period),
        # so a rerun cannot race them on the checkpoints and metrics.jsonl.
        inherit = (lock.fd,) if lock.fd is not None else ()
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT if output else None, env=env,
                                preexec_fn=proclife.die_with_parent(signal.SIGTERM), pass_fds=inherit)
        while True:
            try:
                return proc.wait(timeout=poll_s)
            except subprocess.TimeoutExpired:
                pass
            lock.heartbeat()
            gone = lineage.gone()
            if gone is not None:
                log.error("train: %s, which started this run, is gone: stopping the training", proclife.describe(gone))
                proclife.stop_tree(proc, grace_s)
                raise RuntimeError(f"{what} stopped: {proclife.describe(gone)}, which started it, is gone; "
                                   f"checkpoints in {lock.directory} are kept and a rerun resumes from the latest")
    except _Terminated:
        log.error("train: SIGTERM: stopping the training")
        if proc is not None:
            proclife.stop_tree(proc, grace_s)
        raise RuntimeError(f"{what} stopped by SIGTERM; checkpoints in {lock.directory} are kept and a rerun "
                           "resumes from the latest") from None
    except BaseException:
        if proc is not None and proc.poll() is None:
            proclife.stop_tree(proc, grace_s)
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, old)
