"""Stages as runnable units: the glue of every workflow script (agfsync.core.jobs.job) and the
`agfsync` command call the same run() of each stage; a job sees only the sections its rule
declares (agfsync.core.dag.stage_config), and the command's outputs are the workflow's, byte
for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import REPO
from helpers import on_tiny_models
from snakemake.iocontainers import Namedlist

from agfsync.cli import main
from agfsync.core import dag
from agfsync.core.io import read_json, read_jsonl, write_jsonl
from agfsync.core.jobs import Files, files_of, job, stage_settings
from agfsync.core.settings import SettingsError
from agfsync.core.shards import Shard

RECORDS = [{"id": f"animals-{i:010d}", "category": "Animals", "prompt": p,
            "qa": [{"question": "is there an animal?", "choices": ["yes", "no"], "answer": "yes", "element": "animal",
                    "element_type": "animal"}]}
           for i, p in enumerate(["a red fox in snow", "three ducklings on a pond", "a heron in a lagoon"])]


@pytest.fixture
def cfg(demo_config, tiny_models, tmp_path) -> dict:
    """The demo config on the tiny models, its data files by absolute path, its LLM cache in tmp_path."""
    cfg = on_tiny_models(demo_config, tiny_models)
    evaluation = cfg["eval"]
    evaluation["hpsv2"]["prompts_dir"] = str(REPO / evaluation["hpsv2"]["prompts_dir"])
    for key in ("text_inputs", "questions"):
        evaluation["tifa"][key] = str(REPO / evaluation["tifa"][key])
    evaluation["tifa"]["max_prompts"] = 2
    evaluation["hpsv2"]["per_style"] = 1
    evaluation["mjhq"]["per_category"] = 2
    for key in ("meta", "images"):
        evaluation["mjhq"][key] = str(REPO / evaluation["mjhq"][key])
    evaluation["judge"]["llm"]["responses"] = str(REPO / evaluation["judge"]["llm"]["responses"])
    evaluation["shard_size"] = 12  # one shard per benchmark
    cfg["candidates"].update({"num_per_prompt": 2, "shard_size": 2, "attention": "sdpa"})
    cfg["llm_cache_dir"] = str(tmp_path / "llm_cache")
    return cfg


def config_file(cfg: dict, path: Path) -> str:
    path.write_text(yaml.safe_dump({**cfg, "extends": None}))  # a complete config: extends nothing
    return str(path)


def fake_snakemake(cfg: dict, stage_cfg: dict | None, tmp_path: Path, *, inputs=None, outputs=None, wildcards=None,
                   gpu: int | None = None, **params):
    """What Snakemake hands a rule's script: Namedlists of files, params, wildcards; the full config."""
    params = {**({"cfg": stage_cfg} if stage_cfg is not None else {}), **params}
    return SimpleNamespace(
        config=cfg, params=Namedlist(fromdict=params), log=Namedlist([str(tmp_path / "logs" / "job.log")]),
        input=_files(inputs), output=_files(outputs),
        wildcards=Namedlist(fromdict=wildcards or {}),
        resources=SimpleNamespace(**({"gpu": gpu} if gpu is not None else {})))


def _files(files) -> Namedlist:
    """Named files from a dict, unnamed ones from a list (`output: "results/..."`)."""
    return Namedlist(files) if isinstance(files, list) else Namedlist(fromdict=files or {})


# ----------------------------------------------------------------------------- the job glue


def test_files_by_name_and_the_sole_unnamed_file():
    files = Files({"qa": "qa.jsonl", "shards": ["a.tar", "b.tar"]})
    assert files["qa"] == "qa.jsonl" and files["shards"] == ["a.tar", "b.tar"] and set(files) == {"qa", "shards"}
    with pytest.raises(KeyError, match="no file named 'shard' \\(named: qa, shards\\)"):
        files["shard"]
    sole = Files(unnamed=["results/sd15/train_cache"])  # `output: "results/{model}/train_cache"`
    assert sole["cache"] == "results/sd15/train_cache" and "cache" in sole
    assert "x" not in Files({"a": "1"}, ["b"])  # next to named files an unnamed one has no name

    unnamed = Namedlist(["results/sd15/candidates/shard-00000.tar"])
    assert files_of(unnamed)["shard"] == "results/sd15/candidates/shard-00000.tar"
    mixed = Namedlist(["qa.jsonl", "s0.jsonl", "s1.jsonl", "extra"])
    mixed._set_name("qa", 0)
    mixed._set_name("scores", 1, end=3)
    files = files_of(mixed)
    assert dict(files) == {"qa": "qa.jsonl", "scores": ["s0.jsonl", "s1.jsonl"]} and files.unnamed == ("extra",)


def test_job_gives_the_declared_sections_with_operational_keys_back(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("AGFSYNC_JOB_TEST_KEY", "sk-job-7f3a9c2e51b84d6e")
    cfg["qa"]["llm"]["api_key_env"] = "AGFSYNC_JOB_TEST_KEY"  # another stage's key: masked in this job's log too
    cfg["prompts"]["llm"]["max_requests"] = 7  # operational: left out of the params, read back from the config
    stage_cfg = dag.stage_config(cfg, "prompts", "scores.clip")
    assert "max_requests" not in stage_cfg["prompts"]["llm"]
    snakemake = fake_snakemake(cfg, stage_cfg, tmp_path, outputs={"prompts": "p.jsonl", "summary": "s.json"})
    with job(snakemake) as j:
        assert j.settings.prompts.llm.max_requests == 7 and j.settings.scores.clip.model == cfg["scores"]["clip"]["model"]
        assert j.outputs["prompts"] == "p.jsonl" and dict(j.wildcards) == {} and j.log.endswith("job.log")
        with pytest.raises(SettingsError, match="'qa' was read, but this stage did not declare it"):
            j.settings.qa.mode
        import logging

        logging.getLogger("agfsync.test").warning("echo sk-job-7f3a9c2e51b84d6e")
    text = (tmp_path / "logs" / "job.log").read_text()
    assert "echo ***" in text and "sk-job" not in text

    with pytest.raises(ValueError, match="boom"), job(snakemake):
        raise ValueError("boom")
    assert "job failed" in (tmp_path / "logs" / "job.log").read_text()  # the traceback is in the rule's log


def test_a_model_job_binds_its_gpus_and_sets_the_threads(cfg, tmp_path, monkeypatch):
    import torch

    from agfsync.core import gpu_slots

    bound, threads = [], []
    monkeypatch.setattr(gpu_slots, "bind_gpus", bound.append)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    cfg["cpu_threads"] = 3
    with job(fake_snakemake(cfg, dag.stage_params(cfg, "candidates_generate", model="sd15"), tmp_path, gpu=1)) as j:
        assert j.settings.cpu_threads == 3
    assert bound == [1] and threads == [3]
    with job(fake_snakemake(cfg, dag.stage_config(cfg, "qa"), tmp_path, gpu=1)):  # declares no cpu_threads
        pass
    with job(fake_snakemake(cfg, None, tmp_path, url="file:///x")) as j:  # a rule without cfg (downloads)
        assert j.params["url"] == "file:///x"
    assert bound == [1] and threads == [3]


# ----------------------------------------------------------------------------- workflow job == command


def test_candidates_from_a_job_and_from_the_command_are_the_same_bytes(cfg, tmp_path):
    """Shard 1 (shard_size 2) of three prompts: the third prompt only, sliced by the stage."""
    from agfsync.stages import candidates

    qa = tmp_path / "qa.jsonl"
    write_jsonl(qa, RECORDS)
    snakemake = fake_snakemake(cfg, dag.stage_params(cfg, "candidates_generate", model="sd15"), tmp_path, inputs={"qa": str(qa)},
                               outputs=[str(tmp_path / "job.tar")], wildcards={"model": "sd15", "shard": "00001"}, gpu=0)
    with job(snakemake) as j:  # workflow/scripts/candidates_generate.py
        with pytest.raises(SettingsError, match="'scores'"):
            j.settings.scores.vqa  # the rule declares the model and the candidates section, nothing else
        candidates.run(j.settings, j.inputs, j.outputs, **j.wildcards)
    assert main(["candidates", "--config", config_file(cfg, tmp_path / "c.yaml"), "--model", "sd15",
                 "--qa", str(qa), "--shard", "1", "--out", str(tmp_path / "cli.tar")]) == 0
    assert (tmp_path / "job.tar").read_bytes() == (tmp_path / "cli.tar").read_bytes()
    with Shard(tmp_path / "cli.tar") as shard:
        assert [(r["prompt_id"], r["candidate"]) for r in shard.rows] == [(RECORDS[2]["id"], 0), (RECORDS[2]["id"], 1)]


def test_a_train_dpo_job_hands_the_launcher_its_settings_and_the_full_configs_digest(cfg, tmp_path, monkeypatch):
    """workflow/scripts/train_dpo.py: the launcher gets the job's typed settings (what train_dpo declares, with
    train.launch back from the full config) and the digest of the FULL config for the model (j.config_digest),
    which the trainer records as config_hash; the settings alone could not give it."""
    import runpy

    import torch

    from agfsync.core import gpu_slots
    from agfsync.core.config import config_digest
    from agfsync.core.sections import Settings
    from agfsync.train import launch

    calls = []
    monkeypatch.setattr(launch, "run_training", lambda *a, **k: calls.append((a, k)) or 0)
    monkeypatch.setattr(gpu_slots, "bind_gpus", lambda gpus: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    cfg["train"]["launch"]["join_timeout_s"] = 77  # operational: not in the params, back from the full config
    snakemake = fake_snakemake(cfg, dag.stage_params(cfg, "train_dpo", model="sd15"), tmp_path,
                               inputs={"cache": "results/sd15/train_cache"}, outputs=["results/sd15/agfsync"],
                               wildcards={"model": "sd15"}, checkpoints="results/sd15/train_checkpoints")
    runpy.run_path(str(REPO / "workflow" / "scripts" / "train_dpo.py"), init_globals={"snakemake": snakemake})
    [((settings, model, cache, out, checkpoints), kwargs)] = calls
    assert (model, cache, out, checkpoints) == ("sd15", "results/sd15/train_cache", "results/sd15/agfsync",
                                                "results/sd15/train_checkpoints")
    assert kwargs["config_digest"] == config_digest(cfg, "sd15") and kwargs["log_path"].endswith("job.log")
    entry = {k: v for k, v in cfg["models"]["sd15"].items() if k != "like"}  # `like`: resolved on load, no job's
    assert settings.train.launch.join_timeout_s == 77 and settings.models["sd15"].to_dict() == entry
    with pytest.raises(SettingsError, match="'candidates' was read"):
        settings.candidates.num_per_prompt
    assert Settings.from_json(settings.to_json()).to_dict() == settings.to_dict()  # what the trainer reads back


def test_train_cache_from_a_job_and_from_the_command(cfg, tmp_path):
    from agfsync.stages import candidates, train

    qa = tmp_path / "qa.jsonl"
    write_jsonl(qa, RECORDS[:2])
    shard = tmp_path / "shard-00000.tar"
    full = stage_settings(cfg)
    candidates.run(full, {"qa": str(qa)}, {"shard": str(shard)}, model="sd15", shard=0, progress=False)
    with Shard(shard) as s:
        rows = s.by_prompt()
    pairs = [{"prompt_id": r["id"], "prompt": r["prompt"], "winner": {"shard": str(shard), "image": rows[r["id"]][0]["image"]},
              "loser": {"shard": str(shard), "image": rows[r["id"]][1]["image"]}} for r in RECORDS[:2]]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    declared = stage_settings(dag.stage_params(cfg, "train_cache", model="sd15"), cfg)
    index = train.run_cache(declared, {"pairs": str(tmp_path / "pairs.jsonl")}, {"cache": str(tmp_path / "job")},
                            model="sd15")
    assert (index["num_pairs"], index["latents"]) == (2, "generation")
    assert main(["train-cache", "--config", config_file(cfg, tmp_path / "c.yaml"), "--model", "sd15",
                 "--pairs", str(tmp_path / "pairs.jsonl"), "--out", str(tmp_path / "cli")]) == 0
    assert read_json(tmp_path / "cli" / "index.json") == read_json(tmp_path / "job" / "index.json")


def test_evaluation_through_the_command(cfg, tmp_path):
    """eval-prompts, eval-generate (base and a "fine-tuned" model that is the base UNet: the
    same images), eval-score, eval-reference, metric and judge, on the tiny models."""
    c = config_file(cfg, tmp_path / "c.yaml")

    def run(*args) -> None:
        assert main([args[0], "--config", c, *map(str, args[1:])]) == 0, args

    tuned = tmp_path / "agfsync"
    shutil.copytree(Path(cfg["models"]["sd15"]["pretrained"]) / "unet", tuned / "unet")
    for bench in ("tifa", "hpsv2", "mjhq"):
        prompts = tmp_path / f"{bench}.jsonl"
        run("eval-prompts", "--bench", bench, "--out", prompts)
        for variant in ("base", "agfsync"):
            shard = tmp_path / f"{bench}-{variant}.tar"
            unet = ["--unet", tuned] if variant == "agfsync" else []
            run("eval-generate", "--model", "sd15", "--bench", bench, "--variant", variant, "--prompts", prompts,
                "--shard", 0, *unet, "--out", shard)
            out = tmp_path / (f"{bench}-{variant}.npz" if bench == "mjhq" else f"{bench}-{variant}.jsonl")
            run("eval-score", "--bench", bench, "--shard", shard, "--prompts", prompts, "--out", out)
    assert [r["id"] for r in read_jsonl(tmp_path / "hpsv2.jsonl")] == ["anime-000", "concept-art-000",
                                                                       "paintings-000", "photo-000"]
    assert (tmp_path / "hpsv2-base.tar").read_bytes() != (tmp_path / "hpsv2-agfsync.tar").read_bytes()  # variant rows
    with Shard(tmp_path / "hpsv2-base.tar") as base, Shard(tmp_path / "hpsv2-agfsync.tar") as tuned_shard:
        assert all(np.array_equal(np.asarray(base.image(a)), np.asarray(tuned_shard.image(b)))
                   for a, b in zip(base.rows, tuned_shard.rows))
        assert {(r["sigma"], r["candidate"], r["latent"]) for r in base.rows} == {(0.0, 0, None)}
    run("eval-reference", "--prompts", tmp_path / "mjhq.jsonl", "--out", tmp_path / "reference.npz")

    for metric, bench, ext in (("hpsv2", "hpsv2", "jsonl"), ("tifa", "tifa", "jsonl"), ("mjhq_fid", "mjhq", "npz")):
        reference = ["--reference", tmp_path / "reference.npz"] if metric == "mjhq_fid" else []
        run("metric", "--model", "sd15", "--metric", metric, "--base", tmp_path / f"{bench}-base.{ext}",
            "--agfsync", tmp_path / f"{bench}-agfsync.{ext}", *reference, "--out", tmp_path / f"{metric}.json")
        result = read_json(tmp_path / f"{metric}.json")
        assert result["difference"]["value"] == pytest.approx(0.0, abs=1e-9), metric  # the same images
    run("judge", "--model", "sd15", "--base", tmp_path / "hpsv2-base.tar", "--agfsync", tmp_path / "hpsv2-agfsync.tar",
        "--prompts", tmp_path / "hpsv2.jsonl", "--out", tmp_path / "judge.json")
    judged = read_json(tmp_path / "judge.json")
    assert judged["metric"] == "judge" and judged["count"]["prompts"] + judged["judge"]["skipped"] == 4


def test_the_command_refuses_what_a_stage_cannot_run(cfg, tmp_path, capsys):
    c = config_file(cfg, tmp_path / "c.yaml")
    assert main(["eval-generate", "--config", c, "--model", "sd15", "--bench", "hpsv2", "--variant", "agfsync",
                 "--prompts", "p.jsonl", "--shard", "0", "--out", str(tmp_path / "x.tar")]) == 2
    assert "--unet (the fine-tuned model directory" in capsys.readouterr().err
    assert main(["train-cache", "--config", c, "--model", "sd99", "--pairs", "p", "--out", "o"]) == 2
    assert "--model 'sd99' is not defined under 'models' (defined: sd15, sdxl)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["prompts", "qa", "candidates", "score", "pairs", "train-cache", "train",
                                     "eval-prompts", "eval-generate", "eval-score", "eval-reference", "metric",
                                     "judge", "report", "download", "unlock", "check-config", "tiny-models"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and f"usage: agfsync {command}" in capsys.readouterr().out


@pytest.mark.slow
def test_train_through_the_command(cfg, tmp_path):
    """`agfsync train` runs the same launcher as rule train_dpo (torchrun, one CPU process)."""
    from agfsync.demo.toy import toy_cache

    cfg["models"]["sd15"]["train"].update({"steps": 2, "global_batch": 2, "micro_batch": 1})
    cfg["train"].update({"gpus": 1, "optimizer": "adamw", "checkpoint_every": 1, "gradient_checkpointing": False})
    cache = toy_cache(tmp_path / "cache", num_pairs=4, chunk_size=4)
    from agfsync.core.config import config_digest, load_config

    c = config_file(cfg, tmp_path / "c.yaml")
    assert main(["train", "--config", c, "--model", "sd15", "--cache", str(cache),
                 "--out", str(tmp_path / "out"), "--checkpoints", str(tmp_path / "ckpt"),
                 "--log", str(tmp_path / "train.log")]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and (tmp_path / "out" / "unet").is_dir()
    # the package's one config digest (of the full config, for this model), as the metric files record it
    assert read_json(tmp_path / "out" / "summary.json")["config_hash"] == config_digest(load_config(c), "sd15")
