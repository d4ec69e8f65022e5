"""`agfsync plan` (pure at import, as agfsync.cli): what a run of a config will cost before it
is submitted, per stage (jobs, items, GPU-hours, wall time on N GPUs, disk), then downloads,
LLM requests and cost, totals and the assumptions behind every estimate (agfsync.core.plan).
Imports only agfsync.core."""

from __future__ import annotations

import json
import sys

from agfsync.core.config import load_config
from agfsync.core.plan import PlanError, plan
from agfsync.core.plan_table import EFFICIENCY, GPUS


def human_bytes(value) -> str:
    if value is None:
        return "unknown"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {unit}" if value < 100 * size else f"{value / size:,.0f} {unit}"
    return f"{value:.0f} B"


def human_time(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _items(items: dict) -> str:
    return ", ".join(f"{v:,} {k}" for k, v in items.items()) or "-"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def _money(value) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


def format_plan(result: dict, source: str = "config") -> str:
    """The plan as aligned text tables: stages, disk, downloads, LLM, totals, throughputs, assumptions."""
    c, g, t = result["config"], result["gpu"], result["totals"]
    on_gpu = g["on_gpu"]
    out = [f"agfsync plan: {source} on {c['gpus']} x {g['name']} ({g['peak_bf16_tflops']:g} TFLOP/s dense BF16, "
           f"efficiency {c['efficiency']:g})" if on_gpu else f"agfsync plan: {source} (device: {c['device']})",
           f"models {', '.join(c['run_models'])}: {c['prompts']:,} prompts x {c['num_per_prompt']} candidates, "
           f"~{c['questions_per_prompt']} questions per prompt", ""]
    disk = {}
    for f in result["disk"]:
        disk[f["stage"]] = disk.get(f["stage"], 0) + f["bytes"]
    rows = [[s["stage"], f"{s['jobs']:,}", _items(s["items"]), f"{s['gpu_hours']:,.1f}" if s["gpus_per_job"] else "-",
             human_time(s["wall_s"]), human_bytes(disk[s["stage"]]) if s["stage"] in disk else "-"]
            for s in result["stages"]]
    rows.append(["total", f"{t['jobs']:,}", "", f"{t['gpu_hours']:,.1f}", human_time(t["wall_s"]),
                 human_bytes(t["disk_bytes"])])
    out += _table(["stage", "jobs", "items", "GPU-h", f"wall ({c['gpus']} GPUs)" if on_gpu else "wall", "disk"],
                  rows, {1, 3, 4, 5})
    out += ["", "disk per folder"]
    out += _table(["folder", "size", "basis"], [[f["folder"], human_bytes(f["bytes"]), f["basis"]]
                                                for f in result["disk"]], {1})
    d = result["downloads"]
    if d["rows"]:
        bound = "at least " if d["lower_bound"] else ""
        out += ["", f"downloads: {bound}{human_bytes(d['bytes'])} ({d['hub']} hub repositories, {d['files']} files)"]
        out += _table(["kind", "name", "size", "source"], [
            [r["kind"], r["name"], human_bytes(r["bytes"]) + (" (at least)" if r.get("bound") == "lower" else ""),
             r["source"]] for r in sorted(d["rows"], key=lambda r: -(r["bytes"] or 0))], {2})
    out += ["", "LLM (first asks; retries and repairs come on top)"]
    usd = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
    rows = [[x["stage"], x["provider"], x["model"], f"{x['requests']:,}", f"{x['tokens_in']:,}", f"{x['tokens_out']:,}",
             usd(x["price_in"]), usd(x["price_out"]), _money(x["cost_usd"]), x["price_source"]] for x in result["llm"]]
    rows.append(["total", "", "", f"{t['llm_requests']:,}", f"{t['tokens_in']:,}", f"{t['tokens_out']:,}", "", "",
                 _money(t["cost_usd"]) + ("" if t["cost_complete"] else " + unknown"), ""])
    out += _table(["stage", "provider", "model", "requests", "tokens in", "tokens out", "$/1M in", "$/1M out", "cost",
                   "price"], rows, {3, 4, 5, 6, 7, 8})
    out += ["", f"totals: {t['jobs']:,} jobs, {t['gpu_hours']:,.1f} GPU-hours"
            + (f" on {g['name']}, {human_time(t['wall_s'])} on {c['gpus']} GPUs" if on_gpu else "")
            + f", {human_bytes(t['disk_bytes'])} of disk (downloads {human_bytes(t['download_bytes'])} included), "
            f"{t['llm_requests']:,} LLM requests, {_money(t['cost_usd'])}"]
    rates, seen = [], set()
    for s in result["stages"]:  # each rate once (the evaluation's sampler is the candidates')
        for name, r in s["throughputs"].items():
            if (name, r["provenance"]) not in seen:
                seen.add((name, r["provenance"]))
                rates.append((s["stage"], name, r))
    if on_gpu and rates:
        out += ["", f"throughputs per {g['name']} GPU"]
        out += _table(["stage", "of", "rate", "provenance"],
                      [[st, name, f"{r['value']:,.3g} {r['unit']}", r["provenance"]] for st, name, r in rates], {2})
    out += ["", "assumptions"] + [f"- {a}" for a in result["assumptions"]]
    if result["warnings"]:
        out += ["", "warnings"] + [f"- {w}" for w in result["warnings"]]
    return "\n".join(out)


def _cmd_plan(args) -> int:
    prices = {"*": (args.price_in, args.price_out)} if (args.price_in, args.price_out) != (None, None) else None
    try:
        result = plan(load_config(args.config), gpu=args.gpu, gpus=args.gpus, prices=prices, efficiency=args.efficiency)
    except PlanError as err:
        print(f"agfsync plan: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_plan(result, args.config))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="what a run will cost: jobs, GPU-hours, wall time, disk, downloads, LLM tokens",
                       description="Estimate a run of CONFIG before submitting it: per stage the jobs (as `snakemake "
                       "-n` lists them), items (prompts, images, questions, pairs), GPU-hours on the GPU type, wall "
                       "time on N GPUs and disk; disk per output folder, download size, LLM requests, tokens and "
                       "cost; the throughputs with their provenance (measured in bench/measurements, else derived "
                       "from FLOPs) and every assumption. Nothing runs and nothing is downloaded.")
    p.add_argument("config", nargs="?", default="config/config.yaml", metavar="CONFIG",
                   help="the config file (default: config/config.yaml)")
    p.add_argument("--gpu", default="H100", help=f"GPU type: {', '.join(GPUS)} (default: H100)")
    p.add_argument("--gpus", type=int, default=8, help="GPUs the run gets (default: 8)")
    p.add_argument("--price-in", type=float, metavar="USD", help="USD per 1M input tokens, for every LLM stage")
    p.add_argument("--price-out", type=float, metavar="USD", help="USD per 1M output tokens, for every LLM stage")
    p.add_argument("--efficiency", type=float, default=EFFICIENCY,
                   help=f"fraction of the GPU's peak a job sustains, for derived throughputs (default: {EFFICIENCY})")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_cmd_plan)
