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

The stage config is written to a JSON file in the checkpoint directory; the children's
output goes to the rule's log. Everything up to the subprocess call is pure (no torch)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

RENDEZVOUS_FAILURES = ("RendezvousTimeoutError", "RendezvousClosedError", "RendezvousConnectionError")


class LaunchError(RuntimeError):
    """The training cannot be launched as configured (raised before any process starts)."""


def launcher_kind(tcfg: dict) -> str:
    """'standalone' (one node) or 'srun' (several) for a train config section."""
    return "srun" if tcfg.get("nodes", 1) > 1 else "standalone"


def rendezvous_port(tcfg: dict, env: dict) -> int:
    port = tcfg.get("launch", {}).get("rendezvous_port")
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


def srun_plan(tcfg: dict, env: dict) -> dict:
    """Nodes, rendezvous host and port for a multi-node launch inside a SLURM allocation."""
    nodes = tcfg.get("nodes", 1)
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
            "port": rendezvous_port(tcfg, env), "job_id": env["SLURM_JOB_ID"],
            "cpus_per_task": int(cpus) if cpus.isdigit() else None}


def torchrun_command(processes: int, args: list[str], plan: dict | None = None, join_timeout_s: int = 600) -> list[str]:
    """The command line: `torchrun --standalone` (plan None) or `srun ... torchrun` with c10d."""
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    train = ["-m", "agfsync.train", *args]
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


def check_gpus(cfg: dict, processes: int) -> None:
    """Fail before launching when the config asks for more GPUs than this node has."""
    if cfg.get("device") == "cpu":
        return
    import torch

    available = torch.cuda.device_count()
    if processes > available and (cfg.get("device") == "cuda" or available > 0 or processes > 1):
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


def run_training(cfg: dict, model_name: str, cache_dir, out_dir, checkpoints, *, log_path=None,
                 processes: int | None = None, stop_after: int | None = None, env: dict | None = None) -> int:
    env = dict(os.environ if env is None else env)
    tcfg = cfg["train"]
    kind = launcher_kind(tcfg)
    plan = srun_plan(tcfg, env) if kind == "srun" else None
    processes = processes or tcfg["gpus"]
    if plan is None:
        check_gpus(cfg, processes)  # on several nodes each rank checks its own node
    checkpoints = Path(checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    stage_config = checkpoints / "stage_config.json"
    stage_config.write_text(json.dumps(cfg, indent=1))
    args = ["--stage-config", str(stage_config), "--model", model_name, "--cache", str(cache_dir),
            "--out", str(out_dir), "--checkpoints", str(checkpoints)]
    if stop_after is not None:
        args += ["--stop-after", str(stop_after)]
    join_timeout = tcfg.get("launch", {}).get("join_timeout_s", 600)
    command = torchrun_command(processes, args, plan, join_timeout)
    if plan:
        log.info("train: %d node(s) (%s) x %d process(es), rendezvous at %s:%d", plan["nodes"],
                 ", ".join(plan["hosts"]), processes, plan["host"], plan["port"])
    log.info("train: %s", shlex.join(command))
    threads = max(1, (os.cpu_count() or 1) // processes)  # CPU runs: share the cores between processes
    env.setdefault("OMP_NUM_THREADS", str(threads))
    log.info("train: OMP_NUM_THREADS=%s per process", env["OMP_NUM_THREADS"])
    env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # a dead rank fails the job instead of hanging it
    start = 0
    if log_path:
        with open(log_path, "a") as handle:
            start = handle.tell()
            result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    else:
        result = subprocess.run(command, env=env)
    if result.returncode != 0:
        where = f"see {log_path}" if log_path else "see the output"
        if plan and log_path and any(name in _read_from(log_path, start) for name in RENDEZVOUS_FAILURES):
            raise RuntimeError(
                f"training of {model_name}: not all {plan['nodes']} node(s) ({', '.join(plan['hosts'])}) joined the "
                f"rendezvous at {plan['host']}:{plan['port']} within {join_timeout} s "
                f"(train.launch.join_timeout_s); a node that cannot reach that address or failed to start "
                f"stops the job ({where}); checkpoints in {checkpoints} are kept")
        raise RuntimeError(f"training of {model_name} failed (exit {result.returncode}); {where}"
                           f"; checkpoints in {checkpoints} are kept and a rerun resumes from the latest")
    return result.returncode
