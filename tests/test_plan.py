"""`agfsync plan` (agfsync.core.plan, agfsync.plan_cli): the arithmetic on config/demo.yaml and
config/tiny.yaml against the DAG Snakemake builds and against what the demo's LLM stages
send, the paper config's sanity, the throughput table (derived and measured), the request
templates against the stages' own, the JSON and the table."""

from __future__ import annotations

import argparse
import copy
import json
import math

import pytest

from agfsync.core import plan_sizes as S, plan_table as T
from agfsync.core.categories import CATEGORIES, WORLD_CATEGORIES, category
from agfsync.core.config import load_config
from agfsync.core.plan import PlanError, local_unet_params, plan, rule_jobs
from agfsync.plan_cli import add_parser, format_plan
from conftest import REPO

PAPER, DEMO, TINY = (REPO / "config" / f"{name}.yaml" for name in ("config", "demo", "tiny"))
GPU_STAGES = ("candidates_generate", "candidates_score", "train_cache", "train_dpo", "eval_generate", "eval_score",
              "eval_reward")


@pytest.fixture(scope="module")
def paper() -> dict:
    return plan(load_config(PAPER), gpu="H100", gpus=8)


def stage(result: dict, name: str) -> dict:
    return next(s for s in result["stages"] if s["stage"] == name)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agfsync")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


# ----------------------------------------------------------------------------- counts


def test_plan_job_counts_equal_the_dry_run_dag(tmp_path):
    """The jobs per rule of `snakemake -n` (a fresh working copy: nothing is done yet) for the
    demo and the plumbing run; the paper config's from the DAG helpers (its dry run takes ~12 s)."""
    from workflow_helpers import job_counts, snakemake, workdir

    cwd = workdir(tmp_path / "w")
    for config in ("demo", "tiny"):
        result = snakemake(cwd, "-n", "--quiet", "rules", "--configfile", f"config/{config}.yaml")
        assert result.returncode == 0, result.stderr[-2000:]
        dry = job_counts(result.stdout + result.stderr)
        dry.pop("all")
        assert rule_jobs(load_config(REPO / "config" / f"{config}.yaml")) == dry, config
    jobs = rule_jobs(load_config(PAPER))
    shards = math.ceil(12 * 3820 / 64)  # 717 per model
    eval_shards = math.ceil(4081 / 256) + math.ceil(3200 / 256) + math.ceil(30_000 / 256)  # 16 + 13 + 118
    assert jobs["candidates_generate"] == jobs["candidates_score"] == 3 * shards == 2151
    assert jobs["eval_generate"] == jobs["eval_score"] == 3 * 2 * eval_shards == 882
    assert jobs["eval_reward"] == 3 * 2 * (3 * 13 + 16)  # PickScore, ImageReward, HPS v2.1 on HPS v2; VQAScore on TIFA
    assert (jobs["download_file"], jobs["download_hub"], jobs["eval_metric"]) == (14, 11, 30)


def test_plan_golden_arithmetic_of_the_demo_and_the_plumbing_run():
    demo = plan(load_config(DEMO))
    assert demo["config"]["prompts"] == 6 * 56 == 336
    assert stage(demo, "candidates_generate")["items"] == {"images": 336 * 8}
    assert stage(demo, "pairs_select")["items"]["pairs (at most)"] == 336
    assert stage(demo, "train_dpo")["items"] == {"pair passes": 420 * 16, "steps": 420}
    assert stage(demo, "eval_generate")["items"] == {"images": 300 * 2}  # 300 held-out prompts x base, agfsync
    assert stage(demo, "eval_trajectory")["items"] == {"images": (3 + 2) * 48}  # 3 snapshots, base and final
    assert demo["totals"]["gpu_hours"] == 0 and demo["totals"]["wall_s"] is None  # device: cpu
    assert [x["requests"] for x in demo["llm"]] == [6 * 3, 336] and demo["totals"]["cost_usd"] == 0
    # the world's UNet is counted from its safetensors headers, not assumed to be SD 1.5's
    world = local_unet_params(REPO / "data/world/models/sd1")
    assert 0 < world < 10_000_000
    folder = next(f for f in demo["disk"] if f["folder"] == "results/{model}/agfsync")
    assert folder["bytes"] == pytest.approx(world * (6 + 4 * 3), abs=2)

    tiny = plan(load_config(TINY))
    per_model = 12 * 3 * 8
    assert stage(tiny, "candidates_generate")["items"] == {"images": 2 * per_model}
    assert stage(tiny, "pairs_select")["items"]["pairs (at most)"] == 2 * 36
    bench = 8 + 4 * 3 + 3 * 3  # TIFA 8, HPS v2 3 per style, MJHQ 3 per category
    assert stage(tiny, "eval_generate")["items"] == {"images": 2 * bench * 2}
    assert stage(tiny, "judge")["items"] == {"pairs judged": 2 * 12}
    assert any("local directory not found" in w for w in tiny["warnings"])  # resources/tiny_models is built by a rule


def test_plan_llm_requests_equal_what_the_demo_stages_send(tmp_path):
    """The demo's own prompt and QA stages (the world writer over HTTP, 2-3 s) and the plumbing
    run's (recorded answers): their first asks are the plan's requests; retries and repair
    re-asks come on top (the world writer faults 1 in 25 of each kind); the images that reach
    the candidates are the plan's (the demo's QA keeps every prompt; the plumbing run's drops one)."""
    from agfsync.core.benchmarks import load_benchmark
    from agfsync.core.sections import Settings
    from agfsync.llm.providers import _LOCAL_SERVERS, register_local_server
    from agfsync.stages.prompts import write_prompts
    from agfsync.stages.qa import write_qa
    from agfsync.world.writer import WorldWriter

    saved = dict(_LOCAL_SERVERS)
    register_local_server("world", WorldWriter)
    try:
        for path, kept_all in ((DEMO, True), (TINY, False)):
            cfg = copy.deepcopy(load_config(path))
            cfg["llm_cache_dir"] = str(tmp_path / path.stem / "cache")
            out = tmp_path / path.stem
            exclude = load_benchmark(cfg, "tifa") if cfg["prompts"]["exclude_eval_prompts"] else ()
            settings = Settings.from_dict(cfg)
            ps = write_prompts(settings, out / "p.jsonl", out / "ps.json", exclude=exclude)
            qs = write_qa(settings, out / "p.jsonl", out / "qa.jsonl", out / "qs.json")
            planned = plan(cfg)
            prompts_llm, qa_llm = planned["llm"][:2]
            assert sum(c["requests"] for c in ps["per_category"].values()) == prompts_llm["requests"], path.stem
            assert qs["num_prompts_in"] == ps["num_prompts"] == qa_llm["requests"] == planned["config"]["prompts"]
            for got, want in ((ps, prompts_llm), (qs, qa_llm)):
                assert want["requests"] <= got["llm"]["requests_sent"] <= 1.15 * want["requests"] + 4
            images = stage(planned, "candidates_generate")["items"]["images"] / len(cfg["run_models"])
            assert (qs["num_prompts_kept"] * cfg["candidates"]["num_per_prompt"] == images) is kept_all
            assert qs["num_prompts_kept"] * cfg["candidates"]["num_per_prompt"] <= images
    finally:
        _LOCAL_SERVERS.clear()
        _LOCAL_SERVERS.update(saved)


@pytest.mark.slow
def test_plan_counts_bound_what_the_plumbing_run_did(demo_run):
    """The finished plumbing run (conftest's demo_run: config/tiny.yaml): images in the candidate
    shards, pairs and LLM first asks against the plan."""
    from agfsync.core.shards import Shard

    planned = plan(load_config(TINY))
    qa = json.loads((demo_run / "results/prompts/qa_summary.json").read_text())
    prompts = json.loads((demo_run / "results/prompts/prompts_summary.json").read_text())
    assert sum(c["requests"] for c in prompts["per_category"].values()) == planned["llm"][0]["requests"]
    assert qa["num_prompts_in"] == planned["llm"][1]["requests"]
    for model in ("sd15", "sdxl"):
        images = 0
        for path in sorted((demo_run / f"results/{model}/candidates").glob("shard-*.tar")):
            with Shard(path) as shard:
                images += len(shard.rows)
        assert images == qa["num_prompts_kept"] * 8 <= stage(planned, "candidates_generate")["items"]["images"] / 2
        pairs = (demo_run / f"results/{model}/pairs.jsonl").read_text().splitlines()
        assert len(pairs) <= stage(planned, "pairs_select")["items"]["pairs (at most)"] / 2


# ----------------------------------------------------------------------------- the paper config


def test_plan_paper_config_totals_are_sane_and_consistent(paper):
    t = paper["totals"]
    print(f"\npaper config on 8 x H100: {t['gpu_hours']:.1f} GPU-hours, {t['wall_s'] / 3600:.1f} h, "
          f"{t['disk_bytes'] / 1e12:.2f} TB of disk, {t['llm_requests']:,} LLM requests, ${t['cost_usd']:.2f}")
    assert 0.5e12 <= t["disk_bytes"] <= 3e12
    for name in GPU_STAGES:
        assert stage(paper, name)["gpu_hours"] > 0, name
    assert t["gpu_hours"] == pytest.approx(sum(s["gpu_hours"] for s in paper["stages"]))
    assert t["disk_bytes"] == sum(f["bytes"] for f in paper["disk"])
    assert t["cost_usd"] == pytest.approx(sum(x["cost_usd"] for x in paper["llm"])) and t["cost_complete"]
    assert stage(paper, "candidates_generate")["items"]["images"] == 45_840 * 8 * 3
    assert stage(paper, "eval_generate")["items"]["images"] == (4081 + 3200 + 30_000) * 2 * 3
    # checkpoints: 2 kept x (2 SD 1.x + SDXL UNets) x (4 module + 4 master + 2 AdamW8bit) bytes
    ckpt = next(f for f in paper["disk"] if f["folder"] == "results/{model}/train_checkpoints")
    assert ckpt["bytes"] == 2 * (2 * 859_520_964 + 2_567_463_684) * 10
    latents = next(f for f in paper["disk"] if f["folder"] == "results/{model}/candidates (latents)")
    assert latents["per_model"]["sdxl"] == 45_840 * 8 * (4 * 128 * 128 * 2 + 128 + 768)
    assert paper["downloads"]["files"] == 14 and paper["downloads"]["hub"] == 11
    assert json.loads(json.dumps(paper)) == paper  # --json round-trips


def test_plan_follows_each_models_train_overrides():
    """A LoRA run beside the full fine-tune (models.<name>.overrides.train): its checkpoints hold
    the module weights only, and as many as its own keep_checkpoints says."""
    cfg = copy.deepcopy(load_config(PAPER))
    cfg["models"]["sdxl_lora"] = {**copy.deepcopy(cfg["models"]["sdxl"]),
                                  "overrides": {"train": {"lora_rank": 8, "keep_checkpoints": 1}}}
    cfg["run_models"] = ["sdxl", "sdxl_lora"]
    result = plan(cfg)
    ckpt = next(f for f in result["disk"] if f["folder"] == "results/{model}/train_checkpoints")
    assert ckpt["per_model"] == {"sdxl": 2 * 2_567_463_684 * 10, "sdxl_lora": 1 * 2_567_463_684 * 4}
    assert "LoRA" in ckpt["basis"]


def test_plan_gpu_type_and_count_move_time_not_work(paper):
    a100 = plan(load_config(PAPER), gpu="a100", gpus=16)
    assert a100["gpu"]["name"] == "A100"
    for name in GPU_STAGES:
        assert stage(a100, name)["gpu_hours"] == pytest.approx(stage(paper, name)["gpu_hours"] * 989.4 / 312.0)
    gen = stage(a100, "candidates_generate")
    assert gen["wall_s"] == pytest.approx(gen["job_seconds"] / 16)  # 2,151 one-GPU jobs over 16 GPUs
    train = stage(a100, "train_dpo")  # train.gpus = 8: two trainings at once on 16 GPUs
    assert train["wall_s"] == pytest.approx(max(train["job_seconds"] / 2, train["longest_job_s"]))
    with pytest.raises(PlanError) as err:
        plan(load_config(PAPER), gpu="V100")
    for name in T.GPUS:
        assert name in str(err.value)


# ----------------------------------------------------------------------------- tables


def test_plan_throughputs_are_derived_from_flops_and_measured_when_committed(tmp_path):
    cfg = load_config(PAPER)
    sd15 = plan(cfg, gpu="H200", measurements=tmp_path)  # no measurement here
    rate = stage(sd15, "candidates_generate")["throughputs"]["sd15"]
    assert rate["value"] == pytest.approx(989.4 * 0.35 / (25 * 2 * 0.8033 + 2.5145))
    assert rate["provenance"].startswith("derived: 989.4 TFLOP/s x efficiency 0.35")
    dpo = stage(sd15, "train_dpo")["throughputs"]["sdxl"]
    assert dpo["value"] == pytest.approx(989.4 * 0.35 / (10 * 6.7612))  # 8 + 2 recomputed with checkpointing
    # bench/gpu.sh's gpu.json, committed as bench/measurements/gpu_h200.json (bench/README.md, step 3)
    gpu_json = {"date": "2026-12-01", "smoke": False, "machine": {"gpu": "NVIDIA H200"}, "steps": {
        "generation": {"generation": {"sd15": {"images_per_s": 11.5, "steps": 25, "resolution": 512,
                                               "candidates_per_batch": 8},
                                      "sdxl": {"images_per_s": 2.0, "steps": 30, "resolution": 1024}}},
        "dpo": {"runs": [{"arch": "sd15", "resolution": 512, "kernels": "triton", "seconds_per_pair": 0.05},
                         {"arch": "sd15", "resolution": 512, "kernels": "torch", "seconds_per_pair": 0.04}]},
        "vqa": {"fast_questions_per_s": 400.0}}}
    (tmp_path / "gpu_h200.json").write_text(json.dumps(gpu_json))
    found = plan(cfg, gpu="H200", measurements=tmp_path)
    gen = stage(found, "candidates_generate")["throughputs"]
    assert gen["sd15"]["value"] == 11.5 and gen["sd15"]["provenance"].startswith("measured: ")
    assert "2026-12-01" in gen["sd15"]["provenance"]
    assert gen["sdxl"]["provenance"].startswith("derived: ")  # measured at 30 steps, the config samples 15
    dpo = stage(found, "train_dpo")["throughputs"]["sd15"]  # train.kernels auto runs torch: the torch run
    assert dpo["value"] == pytest.approx(25.0) and dpo["provenance"].endswith("kernels torch)")
    triton = copy.deepcopy(cfg)
    triton["train"]["kernels"] = "triton"
    assert stage(plan(triton, gpu="H200", measurements=tmp_path), "train_dpo")["throughputs"]["sd15"]["value"] == \
        pytest.approx(20.0)
    assert stage(found, "candidates_score")["throughputs"]["stage3"]["provenance"].startswith("measured VQA")
    assert "measured where" in found["assumptions"][0]


def test_plan_request_templates_match_the_stages():
    """The character counts behind the token estimates are those of the requests the stages build."""
    from agfsync.stages import judge, prompts, qa

    for name in (*CATEGORIES, *WORLD_CATEGORIES):
        cat = category(name)
        request = prompts.build_request(cat, 0, 20, seed=1)
        examples = "\n".join(f"- {e}" for e in cat.examples)
        assert sum(len(m["content"]) for m in request.messages) == (
            S.PROMPTS_FIXED_CHARS + 2 * len(cat.name) + len(cat.focus) + len(examples) + len("20")), name
    for mode in qa.MODES:
        request = qa.build_request({"id": "x-1", "prompt": "a red bus"}, mode, seed=1)
        assert sum(len(m["content"]) for m in request.messages) == S.QA_FIXED_CHARS[mode] + len("a red bus")
        assert S.QA_EXAMPLE_PAIRS[mode] == len(qa.EXAMPLES[mode])
        records = [len(json.dumps(e, ensure_ascii=False)) for e in qa.EXAMPLES[mode]]
        assert S.QA_PAIR_CHARS[mode] == round(sum(records) / len(records))
    assert len(judge.SYSTEM) + len(judge.INSTRUCTION.format(prompt="")) == S.JUDGE_FIXED_CHARS
    assert (S.image_tokens(512), S.image_tokens(1024)) == (255, 765)  # OpenAI's worked examples


def test_plan_prices_and_downloads_are_tabled_with_sources(paper):
    for row in paper["downloads"]["rows"]:
        assert row["source"], row
        if row["name"].endswith(".json"):
            continue
        assert row["bytes"], row  # every weight file and hub repository has a size
    hps = next(r for r in paper["downloads"]["rows"] if r["name"].endswith("HPS_v2_compressed.pt"))
    assert hps["bytes"] == 1_972_484_501
    given = plan(load_config(PAPER), prices={"*": (1.0, 2.0)})
    for row in given["llm"]:
        assert row["cost_usd"] == pytest.approx(row["tokens_in"] / 1e6 * 1.0 + row["tokens_out"] / 1e6 * 2.0, rel=1e-3)
        assert row["price_source"] == "given"


def test_plan_local_unet_parameters_come_from_safetensors_headers(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    unet = tmp_path / "model" / "unet"
    unet.mkdir(parents=True)
    save_file({"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float32)},
              str(unet / "diffusion_pytorch_model-00001-of-00002.safetensors"))
    save_file({"c": np.zeros((2, 2, 2), np.float32)}, str(unet / "diffusion_pytorch_model-00002-of-00002.safetensors"))
    save_file({"a": np.zeros((3, 4), np.float16)}, str(unet / "diffusion_pytorch_model.fp16.safetensors"))
    assert local_unet_params(tmp_path / "model") == 12 + 5 + 8
    assert local_unet_params(tmp_path / "missing") is None


# ----------------------------------------------------------------------------- the command


def test_plan_cli_prints_the_table_and_json(capsys, paper):
    assert run_cli(["plan", str(PAPER), "--gpu", "H100", "--gpus", "8"]) == 0
    text = capsys.readouterr().out
    assert text == format_plan(paper, str(PAPER)) + "\n"
    header = next(line for line in text.splitlines() if line.startswith("stage "))
    assert header.split() == ["stage", "jobs", "items", "GPU-h", "wall", "(8", "GPUs)", "disk"]
    for word in ("candidates_generate", "train_dpo", "total", "downloads:", "gemini-2.0-flash", "assumptions",
                 "derived: 989.4 TFLOP/s"):
        assert word in text, word
    assert run_cli(["plan", str(PAPER), "--json", "--price-in", "1", "--price-out", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["jobs"] == paper["totals"]["jobs"] and data["llm"][0]["price_in"] == 1.0
    assert run_cli(["plan", str(PAPER), "--gpu", "V100"]) == 2
    err = capsys.readouterr().err
    assert "unknown GPU type 'V100'" in err and "H100" in err and "A100" in err
    assert run_cli(["plan", str(DEMO)]) == 0  # a CPU run: no GPU columns to fill
    assert "device: cpu" in capsys.readouterr().out
