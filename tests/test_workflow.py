"""The Snakemake workflow: torch-free dry runs, config errors before any job, lint, and the
demo end to end (in a scratch copy of the repository, so the checkout stays clean)."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import (DEMO, SMALL_PAPER, SMALL_PAPER_SHARDS, SNAKEMAKE, job_counts, small_paper, snakemake,
                              workdir)


@pytest.fixture
def no_torch(tmp_path) -> dict:
    """PYTHONPATH entry whose `torch` fails on import: proves a command never imports it."""
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch was imported during a dry run')\n")
    return {"PYTHONPATH": str(fake.parent)}


def test_dry_run_of_the_paper_config_needs_no_torch(tmp_path, no_torch):
    result = snakemake(workdir(tmp_path / "w"), "-n", env=no_torch)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for rule in ("prompts_generate", "qa_generate"):
        assert f"rule {rule}:" in out
    assert "models_tiny" not in out  # the real experiment loads real checkpoints


def test_dry_run_of_the_demo_needs_no_torch(tmp_path, no_torch):
    result = snakemake(workdir(tmp_path / "w"), "-n", *DEMO, env=no_torch)
    assert result.returncode == 0, result.stderr
    assert "rule models_tiny:" in result.stdout + result.stderr
    assert "No validator found" not in result.stdout + result.stderr  # the schema's draft is Snakemake's


def test_bad_config_fails_before_any_job(tmp_path):
    cwd = workdir(tmp_path / "w")
    cfg = yaml.safe_load((cwd / "config" / "tiny.yaml").read_text())
    cfg["qa"]["mode"] = "open_ended"
    (cwd / "config" / "bad.yaml").write_text(yaml.safe_dump(cfg))
    result = snakemake(cwd, "--configfile", "config/bad.yaml", "--replace-workflow-config")
    assert result.returncode != 0
    assert "key 'qa.mode': expected one of 'yes_no', 'multiple_choice'; got 'open_ended'" in result.stderr
    assert not (cwd / "results").exists() and not (cwd / "logs").exists()


def test_one_target_pulls_only_its_jobs(tmp_path, no_torch):
    result = snakemake(small_paper(workdir(tmp_path / "w")), "-n", "results/sdxl/pairs.jsonl", *SMALL_PAPER,
                       env=no_torch)
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == {
        "download_file": 1, "download_hub": 5, "prompts_generate": 1, "qa_generate": 1,
        "candidates_generate": SMALL_PAPER_SHARDS, "candidates_score": SMALL_PAPER_SHARDS,
        "pairs_select": 1}  # downloads: the aesthetic head; SDXL, BLIP-2, two CLIPs and bge (prompt dedup)
    assert "results/sd15/" not in result.stdout and "results/sd14/" not in result.stdout


def test_lint_is_clean(tmp_path):
    result = snakemake(small_paper(workdir(tmp_path / "w")), "--lint", *SMALL_PAPER)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


# Jobs behind one model's AGFSync variant in the demo: images (TIFA 1 shard, HPS v2 2,
# MJHQ 2), their scores or features (one rule over the benchmarks), the 6 metric files and the judge.
AGFSYNC_EVAL = {"eval_generate": 5, "eval_score": 5, "eval_metric": 6, "eval_judge": 1}
METRICS = ("tifa", "clipscore", "aesthetic", "proxy", "hpsv2", "mjhq_fid", "judge")


def test_one_metric_target_pulls_only_its_path(tmp_path, no_torch):
    """`snakemake -n results/sdxl/hpsv2.json`: the sdxl chain, HPS v2 images of both variants
    and their scores; no other benchmark, model or the report. Downloads included."""
    result = snakemake(small_paper(workdir(tmp_path / "w")), "-n", "results/sdxl/hpsv2.json", *SMALL_PAPER,
                       env=no_torch)
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == {
        "download_file": 6, "download_hub": 5, "prompts_generate": 1, "qa_generate": 1,
        "candidates_generate": SMALL_PAPER_SHARDS, "candidates_score": SMALL_PAPER_SHARDS, "pairs_select": 1,
        "train_cache": 1, "train_dpo": 1, "eval_prompts": 1,
        "eval_generate": 26, "eval_score": 26, "eval_metric": 1}
    assert "results/sd15/" not in result.stdout and "tifa" not in result.stdout and "mjhq" not in result.stdout
    for download in ("resources/weights/HPS_v2_compressed.pt", "resources/benchmarks/hpsv2/photo.json",
                     "resources/hub/stabilityai--stable-diffusion-xl-base-1.0.json",
                     "resources/hub/Salesforce--blip2-flan-t5-xxl.json"):
        assert download in result.stdout


def check_evaluation(cwd: Path) -> None:
    """Result files of a finished demo: all metrics, valid, consistent counts; the report."""
    from agfsync.stages.metrics import validate

    for model in ("sd15", "sdxl"):
        for metric in METRICS:
            result = json.loads((cwd / f"results/{model}/{metric}.json").read_text())
            validate(result, f"{model}/{metric}.json")
            assert result["model"] == model and result["metric"] == metric
            diff = result["variants"]["agfsync"]["value"] - result["variants"]["base"]["value"]
            assert result["difference"]["value"] == pytest.approx(diff)
            if metric not in ("mjhq_fid", "judge"):  # paired per prompt: a bootstrap CI of 10,000 resamples
                d = result["difference"]
                assert d["resamples"] == 10_000 and d["level"] == 0.95 and d["ci_low"] <= d["ci_high"], metric
        tifa = json.loads((cwd / f"results/{model}/tifa.json").read_text())
        assert tifa["count"] == {"prompts": 8, "images": 16}
        assert set(tifa["variants"]["base"]["details"]["by_element_type"]) == {
            "activity", "animal/human", "attribute", "color", "counting", "food", "location", "material", "object",
            "other", "spatial"}
        hps = json.loads((cwd / f"results/{model}/hpsv2.json").read_text())
        assert hps["benchmark"]["version"] == "v2.0" and hps["count"]["prompts"] == 12
        assert {s: v["num_images"] for s, v in hps["variants"]["base"]["details"]["styles"].items()} == {
            "anime": 3, "concept-art": 3, "paintings": 3, "photo": 3}
        fid = json.loads((cwd / f"results/{model}/mjhq_fid.json").read_text())
        assert sorted(fid["variants"]["base"]["details"]["by_category"]) == ["animals", "food", "landscape"]
        assert fid["implementation"]["resize"].startswith("torchmetrics:") and fid["variants"]["base"]["value"] > 0
        judge = json.loads((cwd / f"results/{model}/judge.json").read_text())
        # 12 recorded verdicts: 1 repaired (kept), 1 invalid twice (skipped)
        assert judge["judge"]["pairs_judged"] == 11 and judge["judge"]["skipped"] == 1
        assert sum(judge["judge"]["counts"].values()) == 11
        base = (cwd / f"results/{model}/eval/base/hpsv2/shard-00000.tar")
        tuned = (cwd / f"results/{model}/eval/agfsync/hpsv2/shard-00000.tar")
        check_same_seeds(base, tuned)
    import pandas as pd

    table = pd.read_csv(cwd / "results/metrics.tsv", sep="\t")
    assert list(table.columns) == ["model", "benchmark", "metric", "variant", "value", "ci_low", "ci_high", "n"]
    assert set(table["metric"]) >= set(METRICS) and set(table["variant"]) == {"base", "agfsync", "delta"}
    tifa_delta = table[(table.model == "sd15") & (table.metric == "tifa") & (table.variant == "delta")]
    sd15_tifa = json.loads((cwd / "results/sd15/tifa.json").read_text())["difference"]
    assert tifa_delta[["value", "ci_low", "ci_high", "n"]].values.tolist() == [pytest.approx(
        [sd15_tifa["value"], sd15_tifa["ci_low"], sd15_tifa["ci_high"], 8], rel=1e-12, abs=1e-15)]
    html = (cwd / "results/report.html").read_text()
    for section in ("summary", "results-sd15", "charts-sd15", "training-sdxl", "preference-sd15", "eval-images-sdxl",
                    "pairs-images-sd15"):
        assert f'id="{section}"' in html, section
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # self-contained
    assert html.count("<img ") >= 2 * (4 * 3 + 4 * 2)  # per model: 3 benchmarks x 4 pairs and 4 training pairs
    check_renders(cwd / "results/report.html")


def check_renders(html: Path) -> None:
    """The report renders in headless Chromium: every section is in the rendered DOM, the
    images decode, and the screenshot is not blank. The screenshot is kept for a human
    look (AGFSYNC_KEEP_SCREENSHOT=<path>)."""
    import numpy as np
    from browser import render
    from PIL import Image

    shot, dom = render(html, html.parent)
    for section in ("results-sd15", "training-sd15", "preference-sdxl", "eval-images-sd15", "pairs-images-sdxl"):
        assert f'id="{section}"' in dom, section
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (2400, 1280) and pixels.std() > 20  # text, charts and images, not an empty page
    keep = os.environ.get("AGFSYNC_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def check_same_seeds(base: Path, tuned: Path) -> None:
    from agfsync.core.shards import Shard

    with Shard(base) as a, Shard(tuned) as b:
        assert [(r["prompt_id"], r["seed"], r["sampler_seed"]) for r in a.rows] == [
            (r["prompt_id"], r["seed"], r["sampler_seed"]) for r in b.rows]
        assert {r["variant"] for r in a.rows} == {"base"} and {r["variant"] for r in b.rows} == {"agfsync"}
        assert any((a.image(x).tobytes() != b.image(y).tobytes()) for x, y in zip(a.rows, b.rows))  # the UNet differs


@pytest.mark.slow
def test_demo_runs_end_to_end_and_a_rerun_does_nothing(demo_run):
    cwd = demo_run  # the demo, run locally once per session (conftest.py); test_slurm compares with it

    prompts = [json.loads(line) for line in (cwd / "results/prompts/prompts.jsonl").read_text().splitlines()]
    qa = [json.loads(line) for line in (cwd / "results/prompts/qa.jsonl").read_text().splitlines()]
    assert len(prompts) == 36 and len({p["category"] for p in prompts}) == 12
    assert len(qa) == 35 and all(len(r["qa"]) >= 5 for r in qa)
    summary = json.loads((cwd / "results/prompts/qa_summary.json").read_text())
    assert summary["dropped_too_few_pairs"]["count"] == 1 and summary["num_repaired"] == 2
    for log in ("logs/prompts/prompts_generate.log", "logs/prompts/qa_generate.log", "logs/models/models_tiny.log"):
        assert (cwd / log).stat().st_size > 0, log
    manifest = json.loads((cwd / "resources/tiny_models/MANIFEST.json").read_text())
    assert sorted(manifest["families"]) == ["aesthetic", "blip2", "clip", "fid", "hps", "sbert", "sd1", "sdxl"]

    for model in ("sd15", "sdxl"):
        pairs = [json.loads(line) for line in (cwd / f"results/{model}/pairs.jsonl").read_text().splitlines()]
        summary = json.loads((cwd / f"results/{model}/pairs_summary.json").read_text())
        assert summary["num_prompts_scored"] == 35 and len(pairs) == summary["num_pairs"] > 0
        assert all(p["winner"]["total"] > p["loser"]["total"] for p in pairs)
        assert len(list((cwd / f"results/{model}/candidates").glob("shard-*.tar"))) == 3
    for model in ("sd15", "sdxl"):
        summary = json.loads((cwd / f"results/{model}/agfsync/summary.json").read_text())
        assert summary["steps"] == 20 and summary["final"]["step"] == 20
        assert (cwd / f"results/{model}/agfsync/unet/diffusion_pytorch_model.safetensors").exists()
        steps = [json.loads(line) for line in (cwd / f"results/{model}/agfsync/metrics.jsonl").read_text().splitlines()]
        assert len(steps) == 20
        # the logged lr is the one the step used: cosine from 1e-4, no warmup
        assert steps[0]["lr"] == pytest.approx(1e-4) and steps[19]["lr"] == pytest.approx(
            1e-4 * 0.5 * (1 + math.cos(math.pi * 19 / 20)))
        assert (cwd / f"results/{model}/train_checkpoints/latest").read_text().strip() == "step000020"
    log = (cwd / "logs/sd15/candidates_generate/shard-00000.log").read_text()
    assert "12 prompts, 96 images in" in log and "images/s" in log
    assert "attention: auto chose sdpa because device is cpu" in log

    check_evaluation(cwd)

    again = snakemake(cwd, *DEMO)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # Snakemake's own report, with the page and the metric files in it
    report = snakemake(cwd, *DEMO, "--report", "snakemake_report.html")
    assert report.returncode == 0, report.stderr[-2000:]
    text = (cwd / "snakemake_report.html").read_text()
    assert "report.html" in text and "hpsv2.json" in text

    # Snakemake reruns a job whose params change: a rule's params name only what determines
    # its output. A new learning rate retrains that model only; LLM fetch settings rerun nothing.
    cfg = yaml.safe_load((cwd / "config/tiny.yaml").read_text())
    lr = copy.deepcopy(cfg)
    lr["models"]["sd15"]["train"]["lr"] = 2e-4
    fetch = copy.deepcopy(cfg)
    fetch["prompts"]["llm"].update({"concurrency": 1, "max_requests": 999, "timeout_s": 5})
    fetch["qa"]["llm"].update({"max_retries": 1, "retry_failed": True})
    for name, changed in (("lr", lr), ("fetch", fetch)):
        (cwd / f"config/{name}.yaml").write_text(yaml.safe_dump(changed))
    dry = snakemake(cwd, "-n", "--configfile", "config/lr.yaml", "--replace-workflow-config")
    # that model's training, then its AGFSync images and everything computed from them; base images stay
    assert job_counts(dry.stdout + dry.stderr) == {"train_dpo": 1, **AGFSYNC_EVAL, "report": 1, "all": 1}, dry.stdout
    outputs = [line.split(":", 1)[1] for line in dry.stdout.splitlines() if line.strip().startswith("output:")]
    assert outputs and not [o for o in outputs if "results/sd15/eval/base/" in o or "results/sdxl/" in o], outputs
    dry = snakemake(cwd, "-n", "--configfile", "config/fetch.yaml", "--replace-workflow-config")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout

    # A crash while generating shard 1 leaves no shard file (writes are atomic) and nothing
    # downstream of it: the rerun redoes that shard, its scores and the gather, nothing else.
    crashed = ("candidates/shard-00001.tar", "scores/shard-00001.jsonl", "pairs.jsonl", "pairs_summary.json")
    aside = cwd / "aside"
    for path in crashed:  # moved aside, and back afterwards: the session's demo run stays complete
        (aside / path).parent.mkdir(parents=True, exist_ok=True)
        (cwd / "results/sdxl" / path).rename(aside / path)
    dry = snakemake(cwd, "-n", *DEMO)
    for path in crashed:
        (aside / path).rename(cwd / "results/sdxl" / path)
    jobs = job_counts(dry.stdout + dry.stderr)
    assert jobs == {"candidates_generate": 1, "candidates_score": 1, "pairs_select": 1, "train_cache": 1,
                    "train_dpo": 1, **AGFSYNC_EVAL, "report": 1, "all": 1}, dry.stdout

    # A shard does not depend on how Snakemake was started: regenerated with --cores 1 (the
    # session's run had 2) and a different OMP_NUM_THREADS, it is byte-identical, because model
    # jobs take their thread count from the config key cpu_threads (agfsync.models.loaders.start_model_job).
    shard = cwd / "results/sd15/candidates/shard-00000.tar"
    kept = cwd / "aside/shard-00000.tar"
    shard.rename(kept)
    try:
        one = subprocess.run([SNAKEMAKE, "results/sd15/candidates/shard-00000.tar", "--cores", "1", *DEMO,
                              "--allowed-rules", "candidates_generate"], cwd=cwd, capture_output=True, text=True,
                             timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert one.returncode == 0, one.stderr[-3000:]
        assert shard.read_bytes() == kept.read_bytes()
        log = (cwd / "logs/sd15/candidates_generate/shard-00000.log").read_text()
        assert "cpu_threads: 2 intra-op thread(s) (config cpu_threads; results on a CPU depend on it)" in log
    finally:
        kept.replace(shard)  # the session's file (and its time stamp) back


def resources_of(output: str, rule: str) -> dict[str, str]:
    """The `resources:` line of the first job of `rule` in a dry run's output."""
    block = output.split(f"rule {rule}:\n", 1)[1].split("\n\n", 1)[0]
    line = next(line for line in block.splitlines() if line.strip().startswith("resources:"))
    return dict(item.split("=", 1) for item in line.split(":", 1)[1].strip().split(", "))


def test_slurm_profile_dry_run_shows_each_jobs_slurm_resources(tmp_path, no_torch):
    """`snakemake -n --profile slurm results/sdxl/hpsv2.json` with no cluster, GPU or weights:
    the profile resolves as typed from the repository root (./slurm), account and
    partitions come from the environment, GPU jobs ask for GPUs through the plugin's own
    resources, CPU jobs for none, and training for train.gpus GPUs on one node."""
    env = {**no_torch, "AGFSYNC_SLURM_ACCOUNT": "proj42", "AGFSYNC_SLURM_PARTITION": "cpu",
           "AGFSYNC_SLURM_GPU_PARTITION": "gpu-a100"}
    cwd = small_paper(workdir(tmp_path / "w"))
    result = subprocess.run([SNAKEMAKE, "-n", "--profile", "slurm", "results/sdxl/hpsv2.json", *SMALL_PAPER], cwd=cwd,
                            capture_output=True, text=True, timeout=600, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert job_counts(out)["candidates_generate"] == SMALL_PAPER_SHARDS and job_counts(out)["train_dpo"] == 1
    generate = resources_of(out, "candidates_generate")
    assert {k: generate[k] for k in ("gpu", "cpus_per_gpu", "mem_mb", "runtime", "slurm_partition", "slurm_account")} == {
        "gpu": "1", "cpus_per_gpu": "8", "mem_mb": "64000", "runtime": "240", "slurm_partition": "gpu-a100",
        "slurm_account": "proj42"}
    train = resources_of(out, "train_dpo")
    assert {k: train[k] for k in ("gpu", "nodes", "tasks_per_gpu", "runtime", "slurm_partition")} == {
        "gpu": "8", "nodes": "1", "tasks_per_gpu": "0", "runtime": "2880", "slurm_partition": "gpu-a100"}
    pairs = resources_of(out, "pairs_select")
    assert "gpu" not in pairs and "gres" not in pairs and pairs["slurm_partition"] == "cpu"
    assert "slurm_extra" not in out

    # several nodes: one task per node, GPUs per node as gres, and the launcher's own srun
    overlay = cwd / "config" / "nodes.yaml"
    overlay.write_text("extends: config/small_paper.yaml\ntrain:\n  nodes: 4\n")
    result = subprocess.run([SNAKEMAKE, "-n", "--profile", "slurm", "results/sdxl/agfsync", "--configfile", str(overlay)],
                            cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    train = resources_of(result.stdout, "train_dpo")
    assert {k: train.get(k) for k in ("gpu", "gres", "nodes", "tasks", "mpi", "tasks_per_gpu")} == {
        "gpu": None, "gres": "gpu:8", "nodes": "4", "tasks": "4", "mpi": "srun", "tasks_per_gpu": "0"}
