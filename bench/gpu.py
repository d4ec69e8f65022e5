"""Every GPU number in one call: kernels, generation, DPO step and VQA, each with its own time budget.

    bench/gpu.sh [--out DIR]            # on the GPU machine (installs the carried wheels first)
    bench/gpu.sh --smoke --out DIR      # the same steps on a CPU with tiny models (the tests run it)

Each step (bench/gpu_steps.py) runs in its own process, stopped at its share of --budget-s;
what it measured up to then is kept. After each step DIR/gpu.json (the machine, package
versions and every number) and DIR/gpu.md (a table) are rewritten, so a run cut short still
leaves the steps before. A step's status is ok, failed (its error's last lines are kept) or
timeout. bench/README.md says how to read the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# bench/ off sys.path (its kernels.py would shadow the `kernels` package bitsandbytes probes for)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

# share of the total budget per step, in the order they run (measured GPU costs are in bench/README.md)
SHARES = {"kernels": 0.26, "generation": 0.22, "dpo": 0.37, "vqa": 0.15}
DEFAULT_BUDGET_S = 450  # 7.5 minutes: the 8 less the wheel install
PACKAGES = ("torch", "triton", "diffusers", "transformers", "accelerate", "bitsandbytes", "deepspeed", "numpy",
            "safetensors", "tokenizers")


def machine() -> dict:
    import torch
    from importlib.metadata import PackageNotFoundError, version

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "packages": {}, "carried": carried()}
    for name in PACKAGES:
        try:
            info["packages"][name] = version(name)
        except PackageNotFoundError:
            info["packages"][name] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability="sm_%d%d" % (props.major, props.minor), multiprocessors=props.multi_processor_count,
                    cuda=torch.version.cuda)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["driver"] = smi.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = None
    return info


def carried() -> list[str]:
    """The distributions bench/gpu.sh installed from the carried wheels (in $AGFSYNC_GPU_SITE)."""
    from importlib.metadata import distributions

    site = os.environ.get("AGFSYNC_GPU_SITE")
    return sorted(d.metadata["Name"] for d in distributions(path=[site])) if site else []


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_step(name: str, out: Path, smoke: bool, budget_s: float) -> dict:
    """Run one step in a child process (its own session, so that the whole group is stopped at the budget)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--out", str(out)] + (["--smoke"] if smoke else [])
    log = out / f"step-{name}.log"
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=budget_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status, rc = "timeout", None
    result = {"status": status, "seconds": round(time.perf_counter() - start, 1), "budget_s": round(budget_s, 1)}
    if status == "failed":
        result["returncode"] = rc
        result["error"] = log.read_text(errors="replace")[-3000:]
    step_file = out / f"step-{name}.json"
    if step_file.exists():
        try:
            result.update(json.loads(step_file.read_text()))
        except json.JSONDecodeError as err:  # the writes are atomic: this means a bug, say so
            result["error"] = f"{step_file}: {err}"
    print(f"gpu.py: {name}: {status} in {result['seconds']} s (budget {budget_s:.0f} s); log {log}", flush=True)
    return result


def _fmt(value, unit="") -> str:
    return "-" if value is None else f"{value}{unit}"


def markdown(result: dict) -> str:
    """One line per measured number that a reader looks for first; gpu.json has them all."""
    m, steps = result["machine"], result["steps"]
    lines = [f"# bench/gpu.sh{' --smoke' if result['smoke'] else ''}, {result['date']}", "",
             f"{m.get('gpu', 'CPU')} ({m.get('capability', '-')}, driver {m.get('driver', '-')}), torch "
             f"{m['packages']['torch']}, triton {m['packages']['triton']}, diffusers {m['packages']['diffusers']}, "
             f"transformers {m['packages']['transformers']}, bitsandbytes {m['packages']['bitsandbytes']}, "
             f"deepspeed {m['packages']['deepspeed']}", "",
             "| step | status | s (budget) | measurement | value |", "| --- | --- | --- | --- | --- |"]

    def row(step, what, value):
        s = steps[step]
        lines.append(f"| {step} | {s['status']} | {s['seconds']} ({s['budget_s']:.0f}) | {what} | {value} |")

    for name in result["order"]:
        s = steps.get(name)
        if s is None:
            continue
        n = len(lines)
        if name == "kernels":
            if "copy_bandwidth_gbs" in s:
                row(name, "device-to-device copy", f"{s['copy_bandwidth_gbs']} GB/s")
            for key, v in s.get("summary", {}).items():
                row(name, f"GroupNorm(+SiLU) {key}, {v['rows']} rows: fwd / bwd vs eager",
                    f"{v['fwd_speedup_vs_eager']}x / {v['bwd_speedup_vs_eager']}x; slowest row "
                    f"{v['fwd_min_fraction_of_copy']:.0%} / {v['bwd_min_fraction_of_copy']:.0%} of copy; "
                    f"vs compile {_fmt(v.get('fwd_speedup_vs_compile'), 'x')} / "
                    f"{_fmt(v.get('bwd_speedup_vs_compile'), 'x')}; checks {'pass' if v['all_checks_pass'] else 'FAIL'}")
            for v in s.get("dpo_loss", []):
                row(name, f"DPO loss {v['arch']} fwd / bwd vs eager",
                    f"{v['speedup_vs_eager']['fwd']}x / {v['speedup_vs_eager']['bwd']}x")
        elif name == "generation":
            for arch, v in s.get("generation", {}).items():
                row(name, f"{arch} {v['resolution']} px, {v['steps']} steps, {v['candidates_per_batch']} candidates",
                    f"{v['images_per_s']} img/s = {v['fraction_of_ceiling']:.0%} of {v['ceiling_images_per_s']} "
                    f"(peak {_fmt(v['peak_gib'], ' GiB')})")
        elif name == "dpo":
            for v in s.get("runs", []):
                value = (f"{v['seconds_per_pair']} s/pair, peak {v['peak_gib']} GiB "
                         f"(~{v['estimated_peak_gib_8_gpus_zero2']} GiB/GPU on 8 GPUs)" if "seconds_per_pair" in v
                         else "error: " + v["error"].strip().splitlines()[-1][:120] if v.get("error", "").strip() else "-")
                row(name, f"{v['arch']} {v['resolution']} px, kernels {v['kernels']}", value)
        elif name == "vqa" and "fast_questions_per_s" in s:
            row(name, f"{s['model']}: {s['questions']} questions, fast vs generate()",
                f"{s['fast_questions_per_s']} vs {_fmt(s.get('generate_questions_per_s'))} q/s "
                f"({_fmt(s.get('ratio'), 'x')})")
        if len(lines) == n:  # nothing measured: say why
            why = (s.get("error") or "").strip().splitlines()
            row(name, "-", why[-1][:160] if why else "no measurement")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny models, Triton interpreter: checks the script")
    parser.add_argument("--out", help="results folder (default: bench/measurements/gpu-<date>, smoke: a temp folder)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for all steps together, shared {SHARES} (default {DEFAULT_BUDGET_S})")
    parser.add_argument("--only", nargs="+", choices=list(SHARES),
                        help="run these steps only, in this order (the budget is shared among them)")
    parser.add_argument("--budget", action="append", default=[], metavar="STEP=SECONDS",
                        help="one step's budget, instead of its share (repeatable)")
    parser.add_argument("--step", choices=list(SHARES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.out is None:
        if args.smoke:
            import tempfile

            args.out = tempfile.mkdtemp(prefix="agfsync-gpu-smoke-")
        else:
            args.out = str(HERE / "measurements" / f"gpu-{datetime.date.today().isoformat()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.step:
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_gpu_steps", HERE / "gpu_steps.py")
        steps = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(steps)
        steps.run_step(args.step, out, args.smoke)
        return 0

    order = args.only or list(SHARES)
    total = sum(SHARES[s] for s in order)
    budgets = {name: args.budget_s * SHARES[name] / total for name in order}
    for item in args.budget:
        name, _, seconds = item.partition("=")
        try:
            if name not in SHARES:
                raise ValueError(f"unknown step {name!r} (expected one of {', '.join(SHARES)})")
            budgets[name] = float(seconds)
        except ValueError as err:
            parser.error(f"--budget {item}: {err}")
    result = {"benchmark": "bench/gpu.sh: kernels, generation, DPO step, VQA (issue 19)",
              "date": datetime.date.today().isoformat(), "smoke": args.smoke, "budget_s": args.budget_s,
              "order": order, "machine": machine(), "steps": {}}
    carry = 0.0  # seconds a step left unused go to the next ones
    for name in order:
        budget = budgets[name] + carry
        result["steps"][name] = run_step(name, out, args.smoke, budget)
        carry = max(0.0, budget - result["steps"][name]["seconds"])
        write_atomic(out / "gpu.json", json.dumps(result, indent=2, default=str) + "\n")
        write_atomic(out / "gpu.md", markdown(result))
    print((out / "gpu.md").read_text(), flush=True)
    print(f"gpu.py: results in {out / 'gpu.json'} and {out / 'gpu.md'}", flush=True)
    return 0 if all(s["status"] == "ok" for s in result["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
