"""Stand-ins for `srun` and `scontrol` (written as scripts onto PATH) for testing the
multi-node launcher on one machine without a SLURM cluster. tests/test_slurm.py runs the
same launcher through the real commands on a real cluster; these let the fast suite check
what happens when a node never starts, which a real one-machine cluster cannot stage.

srun: parses its options up to the command, then runs --ntasks copies of the command at
once with SLURM_PROCID/SLURM_NODEID set, and exits with the worst status. With
FAKE_SRUN_TASKS=k it starts only k of them: the other nodes "failed to start".
scontrol: `show job -o <id>` prints NodeList=FAKE_SLURM_NODELIST (and CPUs/Task),
`show hostnames <list>` prints FAKE_SLURM_NODES (comma-separated), `show node <name>`
prints NodeName=<name> NodeAddr=127.0.0.1."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SRUN = r'''
import os, subprocess, sys
args = sys.argv[1:]
ntasks = 1
while args and args[0].startswith("-"):
    opt = args.pop(0)
    if opt.startswith("--ntasks="):
        ntasks = int(opt.split("=", 1)[1])
start = int(os.environ.get("FAKE_SRUN_TASKS", ntasks))
procs = [subprocess.Popen(args, env={**os.environ, "SLURM_PROCID": str(i), "SLURM_NODEID": str(i)})
         for i in range(start)]
codes = [p.wait() for p in procs]
sys.exit(max(codes) if codes else 1)
'''

SCONTROL = r'''
import os, sys
args = sys.argv[1:]
if args[:2] == ["show", "hostnames"]:
    print("\n".join(os.environ["FAKE_SLURM_NODES"].split(",")))
elif args[:3] == ["show", "job", "-o"]:
    print(f"JobId={args[3]} JobName=x NodeList={os.environ['FAKE_SLURM_NODELIST']} NumNodes=2 "
          f"CPUs/Task={os.environ.get('FAKE_SLURM_CPUS_PER_TASK', 'N/A')}")
elif args[:2] == ["show", "node"]:
    print(f"NodeName={args[2]} Arch=x86_64 NodeAddr=127.0.0.1 NodeHostName={args[2]}")
else:
    sys.exit(f"fake scontrol: unsupported {args}")
'''


def install(directory: Path) -> dict:
    """Write both scripts into `directory`; returns env entries that put them first on PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in (("srun", SRUN), ("scontrol", SCONTROL)):
        path = directory / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(0o755)
    return {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}"}
