"""The workflow's DAG logic (agfsync.core.dag) and its paths (agfsync.core.layout), in-process:
no Snakemake subprocess. The demo config and the paper's (config/config.yaml)."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest
import yaml
from workflow_helpers import DEMO, job_counts, snakemake

from agfsync.core import dag, layout
from agfsync.core.config import load_config
from agfsync.core.settings import SettingsError
from conftest import REPO


@pytest.fixture(scope="module")
def demo() -> dict:
    return load_config(REPO / "config" / "tiny.yaml")


@pytest.fixture(scope="module")
def paper() -> dict:
    return load_config(REPO / "config" / "config.yaml")


# ----------------------------------------------------------------------------- params


def test_stage_config_is_the_named_sections_plus_the_global_keys(demo):
    assert dag.stage_config(demo, *dag.PAIRS_SECTIONS) == {
        "candidates": {"num_per_prompt": 8}, "device": "cpu", "llm_cache_dir": "resources/llm_cache",
        "pairs": {"min_margin": 0.0, "swap": False}, "scores": {"weights": {"aesthetic": 0.1, "clip": 0.55, "vqa": 0.35}},
        "seed": 200}
    assert dag.stage_config(demo, "cpu_threads", *dag.SCORER_SECTIONS) == {
        "cpu_threads": 2, "device": "cpu", "llm_cache_dir": "resources/llm_cache", "seed": 200,
        "scores": {"aesthetic": {"backbone": "resources/tiny_models/aesthetic/backbone",
                                 "head": "resources/tiny_models/aesthetic/head.pth"},
                   "clip": {"gamma": 100, "model": "resources/tiny_models/clip"},
                   "vqa": {"batch_size": 64, "choice_likelihood": "sum", "load_in_8bit": False, "method": "fast",
                           "model": "resources/tiny_models/blip2"}}}


def test_the_weights_are_params_of_pairs_select_not_of_the_scoring(demo, paper):
    """The weighted total is computed in pairs_select: new weights rerun the gather, never
    the scoring jobs (717 BLIP-2 jobs per model on the paper config)."""
    for cfg in (demo, paper):
        assert "weights" not in dag.stage_config(cfg, "cpu_threads", *dag.SCORER_SECTIONS)["scores"]
        assert "weights" not in dag.stage_params(cfg, "eval_score", bench="tifa")["scores"]
        assert dag.stage_config(cfg, *dag.PAIRS_SECTIONS)["scores"] == {"weights": cfg["scores"]["weights"]}


def test_stage_config_leaves_out_llm_operational_keys(demo, paper):
    qa = dag.stage_config(demo, "qa")
    assert sorted(qa) == ["device", "llm_cache_dir", "qa", "seed"]
    assert qa["qa"]["llm"] == {
        "api_key_env": None, "base_url": None, "max_tokens": 2048, "model": "recorded-gemini-pro", "provider": "file",
        "repair_attempts": 2, "responses": "data/demo/llm_responses.jsonl", "send_seed": True, "temperature": 0.2,
        "top_p": 1.0}
    for cfg in (demo, paper):
        for section in ("prompts", "qa"):
            llm = dag.stage_config(cfg, section)[section]["llm"]
            assert not set(llm) & {"concurrency", "timeout_s", "max_retries", "max_requests", "min_yield"}, llm
        judge = dag.stage_config(cfg, "eval.judge")["eval"]["judge"]["llm"]
        assert "concurrency" not in judge and "timeout_s" not in judge
    # train.launch (how processes start) is operational too
    assert "launch" not in dag.stage_config(paper, "train")["train"]


def test_canonical_sorts_keys_recursively_and_keeps_list_order():
    value = {"b": 1, "a": {"d": [{"z": 1, "y": 2}, 3], "c": None}}
    out = dag.canonical(value)
    assert out == value
    assert list(out) == ["a", "b"] and list(out["a"]) == ["c", "d"] and list(out["a"]["d"][0]) == ["y", "z"]
    assert json.dumps(out) == '{"a": {"c": null, "d": [{"y": 2, "z": 1}, 3]}, "b": 1}'


def test_stage_config_does_not_depend_on_key_order(demo):
    shuffled = {key: demo[key] for key in reversed(list(demo))}
    shuffled["scores"] = {key: demo["scores"][key] for key in reversed(list(demo["scores"]))}
    sections = ("cpu_threads", *dag.SCORER_SECTIONS, *dag.PAIRS_SECTIONS)
    assert json.dumps(dag.stage_config(shuffled, *sections)) == json.dumps(dag.stage_config(demo, *sections))


def test_declarations_fill_their_wildcards_and_are_the_params(demo):
    assert dag.declared(demo, "candidates_generate", model="sdxl", shard="00001") == (
        "cpu_threads", "models.sdxl.pretrained", "models.sdxl.revision", "models.sdxl.family",
        "models.sdxl.resolution", "models.sdxl.generation", "candidates")
    assert dag.declared(demo, "eval_score", bench="tifa") == ("cpu_threads", "scores.vqa", "scores.clip",
                                                             "scores.aesthetic", "eval.tifa.gold",
                                                             "eval.tifa.answering", "eval.tifa.sbert")
    assert dag.declared(demo, "eval_score", bench="mjhq") == ("cpu_threads", "eval.mjhq")
    assert dag.declared(demo, "eval_judge", model="sd15") == ("models.sd15.pretrained", "eval.judge",
                                                              "eval.hpsv2.version")
    assert dag.stage_params(demo, "pairs_select") == dag.stage_config(demo, *dag.PAIRS_SECTIONS)


def test_stage_settings_hold_exactly_the_declared_keys(demo):
    from agfsync.core.settings import SettingsError

    settings = dag.stage_settings(demo, "candidates_score")
    assert settings.scores.vqa.batch_size == demo["scores"]["vqa"]["batch_size"]
    assert settings.cpu_threads == demo["cpu_threads"] and settings.seed == demo["seed"]
    with pytest.raises(SettingsError, match="settings key 'scores.weights' was read, but this stage did not declare"):
        settings.scores.weights
    with pytest.raises(SettingsError, match="settings key 'candidates' was read"):
        settings.candidates
    # LLM keys that only change how answers are fetched are not params, but the stage gets them
    prompts = dag.stage_settings(demo, "prompts_generate")
    assert "concurrency" not in dag.stage_params(demo, "prompts_generate")["prompts"]["llm"]
    assert prompts.prompts.llm.concurrency == demo["prompts"]["llm"]["concurrency"]


# ----------------------------------------------------------------------------- resources


def test_train_resources(demo, paper):
    # one node with train.gpus 8: --gpus 8, one task that runs torchrun
    assert dag.train_resources(paper) == {"gpu": 8, "nodes": 1, "tasks_per_gpu": 0}
    # two nodes: one task per node, GPUs per node as gres, the launcher's own srun
    two = copy.deepcopy(paper)
    two["train"]["nodes"] = 2
    assert dag.train_resources(two) == {"nodes": 2, "tasks": 2, "mpi": "srun", "tasks_per_gpu": 0, "gres": "gpu:8"}
    two["device"] = "cpu"
    assert dag.train_resources(two) == {"nodes": 2, "tasks": 2, "mpi": "srun", "tasks_per_gpu": 0}
    # the demo runs on the CPU: no GPU asked for
    assert dag.train_resources(demo) == {"gpu": 0, "nodes": 1, "tasks_per_gpu": 0}
    assert dag.model_gpus(demo) == 0 and dag.model_gpus(paper) == 1


def test_launcher_kind():
    assert dag.launcher_kind({"gpus": 8}) == "standalone"
    assert dag.launcher_kind({"nodes": 1, "gpus": 8}) == "standalone"
    assert dag.launcher_kind({"nodes": 2, "gpus": 8}) == "srun"


# ----------------------------------------------------------------------------- shards and inputs


def test_shard_counts(demo, paper):
    shards = dag.candidate_shards(paper)
    assert len(shards) == 717 and shards[0] == "00000" and shards[-1] == "00716"
    assert {b: len(s) for b, s in dag.eval_shards(paper).items()} == {"tifa": 16, "hpsv2": 13, "mjhq": 118}
    assert dag.candidate_shards(demo) == ["00000", "00001", "00002"]
    assert dag.eval_shards(demo) == {"tifa": ["00000"], "hpsv2": ["00000", "00001"], "mjhq": ["00000", "00001"]}


def test_llm_and_tiny_model_inputs(demo, paper):
    assert dag.llm_inputs(demo, "prompts") == dag.llm_inputs(demo, "qa") == ["data/demo/llm_responses.jsonl"]
    assert dag.llm_inputs(demo, "eval.judge") == ["data/demo/benchmarks/judge_responses.jsonl"]
    assert dag.llm_inputs(paper, "prompts") == dag.llm_inputs(paper, "qa") == dag.llm_inputs(paper, "eval.judge") == []
    assert dag.tiny_models_input(demo) == ["resources/tiny_models"] and dag.tiny_models_input(paper) == []


def test_benchmark_files_and_downloads(demo, paper):
    assert dag.benchmark_files(demo, "hpsv2") == [
        f"data/demo/benchmarks/hpsv2/{style}.json" for style in ("anime", "concept-art", "paintings", "photo")]
    assert dag.benchmark_files(demo, "tifa") == [demo["eval"]["tifa"]["text_inputs"], demo["eval"]["tifa"]["questions"]]
    assert dag.benchmark_files(paper, "mjhq") == [paper["eval"]["mjhq"]["meta"]]
    assert dag.scorer_values(paper) == [
        "Salesforce/blip2-flan-t5-xxl", "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14",
        "resources/weights/sac+logos+ava1-l14-linearMSE.pth"]
    # the official TIFA answering's sentence embedder (eval.tifa.answering: tifa, the default)
    assert dag.eval_score_values(paper, "tifa") == dag.scorer_values(paper) + ["sentence-transformers/all-mpnet-base-v2"]
    assert dag.eval_score_values(paper, "hpsv2") == [paper["eval"]["hpsv2"]["checkpoint"]]
    assert dag.eval_score_values(paper, "mjhq") == [paper["eval"]["mjhq"]["features"],
                                                    paper["eval"]["mjhq"]["inception_weights"]]


def test_eval_inputs(demo):
    assert dag.eval_unet("sd15", "agfsync") == ["results/sd15/agfsync"] and dag.eval_unet("sd15", "base") == []
    assert dag.eval_outputs(demo, "sd15", "base", "hpsv2", "shard") == [
        "results/sd15/eval/base/hpsv2/shard-00000.tar", "results/sd15/eval/base/hpsv2/shard-00001.tar"]
    assert dag.metric_inputs(demo, "sd15", "mjhq_fid") == {
        "base": ["results/sd15/eval/base/mjhq/features-00000.npz", "results/sd15/eval/base/mjhq/features-00001.npz"],
        "agfsync": ["results/sd15/eval/agfsync/mjhq/features-00000.npz",
                    "results/sd15/eval/agfsync/mjhq/features-00001.npz"],
        "reference": "results/eval/mjhq/reference_features.npz"}
    assert dag.metric_inputs(demo, "sdxl", "clipscore") == {
        "base": ["results/sdxl/eval/base/tifa/scores-00000.jsonl"],
        "agfsync": ["results/sdxl/eval/agfsync/tifa/scores-00000.jsonl"]}


def test_eval_score_output_names_follow_the_benchmark():
    """One rule, eval_score, writes the three benchmarks' per-image files; their names are
    those of the three rules it replaced."""
    assert layout.per_image("sd15", "base", "tifa", "00003") == "results/sd15/eval/base/tifa/scores-00003.jsonl"
    assert layout.per_image("sd15", "agfsync", "hpsv2", "00000") == "results/sd15/eval/agfsync/hpsv2/scores-00000.jsonl"
    assert layout.per_image("sdxl", "base", "mjhq", "00117") == "results/sdxl/eval/base/mjhq/features-00117.npz"
    dag.check_per_image("mjhq", "features", "npz")
    dag.check_per_image("tifa", "scores", "jsonl")
    with pytest.raises(ValueError, match="eval_score writes features-<shard>.npz for benchmark mjhq, "
                                         "not scores-<shard>.jsonl"):
        dag.check_per_image("mjhq", "scores", "jsonl")
    with pytest.raises(ValueError, match="for benchmark tifa"):
        dag.check_per_image("tifa", "scores", "npz")


# ----------------------------------------------------------------------------- targets and the report

DEMO_METRICS = ("tifa", "clipscore", "aesthetic", "proxy", "hpsv2", "mjhq_fid", "pickscore", "imagereward", "hpsv21",
                "vqascore", "judge")  # gold: eval.tifa.gold only
DEMO_REPORT_INPUTS = [
    *(f"results/sd15/{m}.json" for m in DEMO_METRICS),
    "results/sd15/agfsync", "results/sd15/pairs.jsonl", "results/sd15/pairs_summary.json",
    *(f"results/sd15/candidates/shard-0000{i}.tar" for i in range(3)),
    *(f"results/sd15/scores/shard-0000{i}.jsonl" for i in range(3)),
    "results/sd15/eval/base/tifa/shard-00000.tar", "results/sd15/eval/agfsync/tifa/shard-00000.tar",
    "results/sd15/eval/base/hpsv2/shard-00000.tar", "results/sd15/eval/agfsync/hpsv2/shard-00000.tar",
    "results/sd15/eval/base/mjhq/shard-00000.tar", "results/sd15/eval/agfsync/mjhq/shard-00000.tar",
    "results/eval/tifa/prompts.jsonl",
    "results/sd15/eval/base/tifa/scores-00000.jsonl", "results/sd15/eval/agfsync/tifa/scores-00000.jsonl",
]


def test_final_targets_of_the_demo(demo):
    assert dag.final_targets(demo) == [
        "results/prompts/prompts.jsonl", "results/prompts/prompts_summary.json", "results/prompts/qa.jsonl",
        "results/prompts/qa_summary.json", "resources/tiny_models",
        "results/sd15/pairs.jsonl", "results/sd15/pairs_summary.json", "results/sd15/agfsync",
        "results/sd15/tifa.json", "results/sd15/clipscore.json", "results/sd15/aesthetic.json",
        "results/sd15/proxy.json", "results/sd15/hpsv2.json", "results/sd15/mjhq_fid.json", "results/sd15/pickscore.json",
        "results/sd15/imagereward.json", "results/sd15/hpsv21.json", "results/sd15/vqascore.json", "results/sd15/judge.json",
        "results/sdxl/pairs.jsonl", "results/sdxl/pairs_summary.json", "results/sdxl/agfsync",
        "results/sdxl/tifa.json", "results/sdxl/clipscore.json", "results/sdxl/aesthetic.json",
        "results/sdxl/proxy.json", "results/sdxl/hpsv2.json", "results/sdxl/mjhq_fid.json", "results/sdxl/pickscore.json",
        "results/sdxl/imagereward.json", "results/sdxl/hpsv21.json", "results/sdxl/vqascore.json", "results/sdxl/judge.json",
        "results/report.html", "results/metrics.tsv"]


def test_gold_is_a_target_only_with_eval_tifa_gold(demo):
    cfg = copy.deepcopy(demo)
    cfg["eval"]["tifa"]["gold"] = "world"
    targets = dag.final_targets(cfg)
    assert targets.index("results/sd15/gold.json") == targets.index("results/sd15/proxy.json") + 1
    assert dag.metric_inputs(cfg, "sd15", "gold") == dag.metric_inputs(cfg, "sd15", "tifa")
    assert dag.stage_params(cfg, "eval_score", bench="tifa")["eval"] == {
        "tifa": {"gold": "world", "answering": "tifa", "sbert": "resources/tiny_models/sbert"}}
    assert "gold" not in dag.stage_params(cfg, "eval_score", bench="hpsv2")["eval"]["hpsv2"]
    cfg["eval"]["tifa"]["enabled"] = False
    assert not [t for t in dag.final_targets(cfg) if t.endswith(("/gold.json", "/proxy.json", "/tifa.json"))]


def test_final_targets_of_the_paper(paper):
    targets = dag.final_targets(paper)
    assert len(targets) == 4 + 3 * (3 + 11) + 2 and "resources/tiny_models" not in targets  # 11 metric files per model
    assert targets[4:7] == ["results/sd14/pairs.jsonl", "results/sd14/pairs_summary.json", "results/sd14/agfsync"]
    assert targets[-2:] == ["results/report.html", "results/metrics.tsv"]


def test_report_inputs_and_paths(demo):
    inputs = dag.report_inputs(demo)
    sdxl = [path.replace("/sd15/", "/sdxl/") for path in DEMO_REPORT_INPUTS if path != "results/eval/tifa/prompts.jsonl"]
    assert inputs == ["results/prompts/prompts_summary.json", *DEMO_REPORT_INPUTS, *sdxl]
    paths = dag.report_paths(demo)
    assert list(paths) == ["sd15", "sdxl"]
    assert paths["sdxl"] == {
        "metrics": {m: f"results/sdxl/{m}.json" for m in DEMO_METRICS},
        "train_metrics": "results/sdxl/agfsync/metrics.jsonl", "train_summary": "results/sdxl/agfsync/summary.json",
        "pairs": "results/sdxl/pairs.jsonl", "pairs_summary": "results/sdxl/pairs_summary.json",
        "eval_shards": {b: {v: f"results/sdxl/eval/{v}/{b}/shard-00000.tar" for v in ("base", "agfsync")}
                        for b in ("tifa", "hpsv2", "mjhq")},
        "trajectory": None,  # eval.trajectory is off in the tiny demo
        "prompts_summary": "results/prompts/prompts_summary.json",
        "candidate_shards": {f"0000{i}": f"results/sdxl/candidates/shard-0000{i}.tar" for i in range(3)},
        "score_shards": {f"0000{i}": f"results/sdxl/scores/shard-0000{i}.jsonl" for i in range(3)},
        "tifa": {"prompts": "results/eval/tifa/prompts.jsonl",
                 "shards": {v: [f"results/sdxl/eval/{v}/tifa/shard-00000.tar"] for v in ("base", "agfsync")},
                 "scores": {v: [f"results/sdxl/eval/{v}/tifa/scores-00000.jsonl"] for v in ("base", "agfsync")}}}
    # everything the page reads is an input of the rule (or inside one: the training directory)
    for model, files in paths.items():
        tifa = files["tifa"]
        read = [*files["metrics"].values(), files["pairs"], files["pairs_summary"], files["prompts_summary"],
                *files["candidate_shards"].values(), *files["score_shards"].values(), tifa["prompts"],
                *(p for by_variant in files["eval_shards"].values() for p in by_variant.values()),
                *(p for kind in ("shards", "scores") for by_variant in tifa[kind].values() for p in by_variant)]
        assert set(read) <= set(inputs)
        assert files["train_metrics"].startswith(f"results/{model}/agfsync/")
    # with eval.trajectory on, the trajectory is read and an input
    cfg = copy.deepcopy(demo)
    cfg["eval"]["trajectory"]["enabled"] = True
    assert dag.report_paths(cfg)["sd15"]["trajectory"] == "results/sd15/trajectory.json"
    assert "results/sd15/trajectory.json" in dag.report_inputs(cfg)


def test_layout_fill_and_under():
    assert layout.fill(layout.METRIC, metric="judge") == "results/{model}/judge.json"
    assert layout.fill(layout.EVAL_SHARD, bench="tifa", variant="base") == "results/{model}/eval/base/tifa/shard-{shard}.tar"
    assert str(layout.under("/tmp/out", "results/sd15/pairs.jsonl")) == "/tmp/out/sd15/pairs.jsonl"


def test_core_imports_no_torch():
    """The workflow imports only agfsync.core at parse time: dag and layout pull in no torch."""
    code = ("import sys; import agfsync.core.dag, agfsync.core.layout; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert not [m for m in sys.modules if m.startswith('agfsync.') and not m.startswith('agfsync.core')], "
            "[m for m in sys.modules if m.startswith('agfsync.')]")
    result = subprocess.run([__import__("sys").executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------- the weights, on a finished demo


@pytest.mark.slow
def test_new_weights_rerun_pairs_and_downstream_but_no_scoring(demo_run, tmp_path):
    """On the finished demo, changing scores.weights reruns pairs_select (it computes the
    weighted total) and what depends on the pairs; no candidates_score job (the sub-scores
    do not depend on the weights) and no base-variant image."""
    cwd = tmp_path / "demo"
    subprocess.run(["cp", "-a", str(demo_run), str(cwd)], check=True)
    cfg = yaml.safe_load((cwd / "config/tiny.yaml").read_text())
    cfg["scores"]["weights"] = {"vqa": 0.5, "clip": 0.4, "aesthetic": 0.1}
    (cwd / "config/weights.yaml").write_text(yaml.safe_dump(cfg))
    same = snakemake(cwd, "-n", *DEMO)
    assert "Nothing to be done" in same.stdout + same.stderr, same.stdout
    dry = snakemake(cwd, "-n", "--configfile", "config/weights.yaml", "--replace-workflow-config")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert job_counts(dry.stdout + dry.stderr) == {
        "pairs_select": 2, "train_cache": 2, "train_dpo": 2, "eval_generate": 10, "eval_score": 10, "eval_metric": 20,
        "eval_reward": 14, "eval_judge": 2, "report": 1, "all": 1}, dry.stdout  # rewards: 2 x (3 x 2 HPS shards + 1 TIFA)
    outputs = [line.split(":", 1)[1] for line in dry.stdout.splitlines() if line.strip().startswith("output:")]
    assert not [o for o in outputs if "/eval/base/" in o or "/scores/" in o or "/candidates/" in o], outputs


def test_a_key_unused_under_the_config_is_left_out_of_the_params(demo, paper):
    """prompts.dedup.model matters only with embedder bge: elsewhere it is no param, so adding it
    (or changing it) reruns no prompts job, and everything after it, of a run that never used it."""
    assert dag.stage_params(demo, "prompts_generate")["prompts"]["dedup"] == {"embedder": "ngram", "threshold": 0.9}
    assert demo["prompts"]["dedup"]["model"] == "BAAI/bge-large-en-v1.5"  # the config itself is untouched
    assert dag.stage_params(paper, "prompts_generate")["prompts"]["dedup"]["model"] == "BAAI/bge-large-en-v1.5"
    settings = dag.stage_settings(demo, "prompts_generate")
    with pytest.raises(SettingsError, match="'prompts.dedup.model' was read, but this stage did not declare it"):
        settings.prompts.dedup.model
