"""The training launcher's plan (one node or srun across nodes) and GPU binding on one
machine. Pure logic, no torch; the launches themselves are in test_train.py (stand-in
srun) and test_slurm.py (a real cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from fake_slurm_cli import install

from agfsync.core.sections import TrainSettings
from agfsync.train.launch import LaunchError, launcher_kind, rendezvous_port, srun_plan, torchrun_command

LAUNCH = {"backend": "auto", "rendezvous_port": None, "join_timeout_s": 600}


def train(**values) -> TrainSettings:
    """The train section's typed settings (defaults for what is not given)."""
    return TrainSettings.from_dict(values, "train")


def test_one_node_is_standalone_torchrun_with_a_process_per_gpu():
    assert launcher_kind({"nodes": 1, "gpus": 8}) == "standalone"  # the workflow's dict, at parse time
    assert launcher_kind(train(nodes=1, gpus=8)) == "standalone"  # the launcher's settings
    assert torchrun_command(8, ["--model", "sdxl"])[1:] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=8", "-m", "agfsync.train.trainer", "--model", "sdxl"]


def test_several_nodes_run_one_torchrun_per_node_under_srun(tmp_path):
    # Snakemake's job step leaves SLURM_JOB_ID but not SLURM_JOB_NODELIST: the node list
    # and CPUs per task come from `scontrol show job`
    env = {**os.environ, **install(tmp_path), "SLURM_JOB_ID": "123456", "FAKE_SLURM_NODELIST": "gpu[07-09]",
           "FAKE_SLURM_NODES": "gpu07,gpu08,gpu09", "FAKE_SLURM_CPUS_PER_TASK": "64"}
    section = train(nodes=2, gpus=8, launch=LAUNCH)
    assert launcher_kind(section) == "srun" and launcher_kind(section.to_dict()) == "srun"
    plan = srun_plan(section, env)
    assert plan == {"nodes": 2, "hosts": ["gpu07", "gpu08"], "host": "127.0.0.1", "port": 29500 + 3456,
                    "job_id": "123456", "cpus_per_task": 64}
    command = torchrun_command(8, ["--model", "sdxl"], plan, 600)
    assert command[:7] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                           "--nodelist=gpu07,gpu08", "--cpus-per-task=64"]
    assert command[9:] == ["torch.distributed.run", "--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=c10d",
                           "--rdzv-endpoint=127.0.0.1:32956", "--rdzv-id=agfsync-123456",
                           "--rdzv-conf=join_timeout=600", "--max-restarts=0", "-m", "agfsync.train.trainer",
                           "--model", "sdxl"]


def test_rendezvous_port_config_then_master_port_then_job_id():
    assert rendezvous_port(train(launch={**LAUNCH, "rendezvous_port": 29999}), {"MASTER_PORT": "1", "SLURM_JOB_ID": "7"}) == 29999
    assert rendezvous_port(train(launch=LAUNCH), {"MASTER_PORT": "31000", "SLURM_JOB_ID": "7"}) == 31000
    assert rendezvous_port(train(launch=LAUNCH), {"SLURM_JOB_ID": "10007"}) == 29507


def test_multi_node_outside_slurm_or_on_too_few_nodes_is_refused_before_any_process(tmp_path):
    with pytest.raises(LaunchError) as err:
        srun_plan(train(nodes=2, launch=LAUNCH), {})
    assert str(err.value) == ("train.nodes is 2: multi-node training runs inside a SLURM job (snakemake --profile "
                              "slurm), but SLURM_JOB_ID is not set")
    env = {**os.environ, **install(tmp_path), "SLURM_JOB_ID": "9", "FAKE_SLURM_NODELIST": "a1", "FAKE_SLURM_NODES": "a1"}
    with pytest.raises(LaunchError) as err:
        srun_plan(train(nodes=4, launch=LAUNCH), env)
    assert str(err.value) == "train.nodes is 4 but SLURM job 9 holds 1 node(s) (a1)"


HOLDER = textwrap.dedent("""
    import os, sys, time
    from agfsync.core.gpu_slots import bind_gpus
    got = bind_gpus(int(sys.argv[1]), timeout_s=float(sys.argv[2]), poll_s=0.05)
    print(",".join(got), os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    time.sleep(float(sys.argv[3]))
""")


def holder(env, count, timeout=30, hold=0.0):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(count), str(timeout), str(hold)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_local_jobs_bind_to_different_gpus(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "2,5,6", "AGFSYNC_GPU_LOCK_DIR": str(tmp_path)}
    env.pop("SLURM_JOB_ID", None)
    first, second = holder(env, 1, hold=30), holder(env, 2, hold=30)
    lines = [p.stdout.readline().split() for p in (first, second)]
    claimed = [set(line[0].split(",")) for line in lines]
    assert [line[0] == line[1] for line in lines] == [True, True]  # CUDA_VISIBLE_DEVICES is what was bound
    assert claimed[0] | claimed[1] == {"2", "5", "6"} and not claimed[0] & claimed[1]
    # every device is held: the next job waits, and gives up with a clear error
    late = holder(env, 1, timeout=0.5)
    assert late.wait(timeout=60) != 0
    assert "no 1 free GPU(s) among 2,5,6 within 0 s" in late.stderr.read()
    first.kill(), first.wait()  # a job that ends (even killed) frees its devices
    third = holder(env, 1)
    assert third.wait(timeout=60) == 0 and third.stdout.read().split()[0] in claimed[0]
    second.kill(), second.wait()


def test_no_binding_inside_slurm_or_without_gpus(monkeypatch):
    from agfsync.core.gpu_slots import bind_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    assert bind_gpus(1) is None  # SLURM already gave the job its devices
    monkeypatch.delenv("SLURM_JOB_ID")
    assert bind_gpus(0) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"  # untouched


@pytest.mark.parametrize("env, gpus", [({"AGFSYNC_GPUS": "3"}, 3), ({"CUDA_VISIBLE_DEVICES": "0,1"}, 2),
                                       ({"CUDA_VISIBLE_DEVICES": ""}, 0)])
def test_workstation_profile_caps_gpu_jobs_at_the_gpus_the_machine_has(env, gpus, monkeypatch):
    import yte
    from conftest import REPO

    for name in ("AGFSYNC_GPUS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with open(REPO / "workstation" / "config.yaml") as handle:  # through the root link, as --profile finds it
        profile = yte.process_yaml(handle, require_use_yte=True)
    assert profile["resources"] == [f"gpu={gpus}"] and profile["cores"] == "all"


def test_slurm_profile_reads_account_and_partitions_from_the_environment(monkeypatch):
    import yte
    from conftest import REPO

    for name in ("AGFSYNC_SLURM_ACCOUNT", "SBATCH_ACCOUNT", "AGFSYNC_SLURM_PARTITION", "SBATCH_PARTITION",
                 "AGFSYNC_SLURM_GPU_PARTITION"):
        monkeypatch.delenv(name, raising=False)
    with open(REPO / "slurm" / "config.yaml") as handle:
        bare = yte.process_yaml(handle, require_use_yte=True)
    assert "slurm_account" not in bare["default-resources"] and "slurm_partition" not in bare["set-resources"]["train_dpo"]
    monkeypatch.setenv("SBATCH_ACCOUNT", "lab")
    monkeypatch.setenv("AGFSYNC_SLURM_PARTITION", "short")
    with open(REPO / "slurm" / "config.yaml") as handle:
        profile = yte.process_yaml(handle, require_use_yte=True)
    assert profile["default-resources"]["slurm_account"] == "lab"
    assert profile["default-resources"]["slurm_partition"] == "short"
    assert profile["set-resources"]["train_dpo"]["slurm_partition"] == "short"  # no GPU partition: the same one
    assert profile["executor"] == "slurm" and profile["retries"] == 1 and "slurm-array-jobs" not in profile
