"""API keys never reach logs, caches or outputs, even when an endpoint echoes them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import REPO, TEST_KEY, live_llm
from fake_openai import FakeOpenAI, error, ok
from helpers import caption_of, category_and_batch, descriptions_json, qa_json

from agfsync.cli import main


def files_containing(root, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def write_config(tmp_path, base_url, **llm) -> str:
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    cfg["llm_cache_dir"] = str(tmp_path / "cache")
    cfg["prompts"].update({"categories": ["Animals", "Plants"], "per_category": 4, "descriptions_per_request": 4})
    cfg["prompts"]["llm"] = live_llm(base_url, **llm)
    cfg["qa"]["llm"] = live_llm(base_url, **llm)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def responder(body, seen):
    if body["messages"][0]["content"].startswith("You write descriptions"):
        return ok(descriptions_json(*category_and_batch(body), 4))
    return ok(qa_json(caption_of(body)))


def test_full_run_writes_the_key_nowhere(api_key, tmp_path, capsys):
    out = tmp_path / "out"
    with FakeOpenAI(responder) as server:
        config = write_config(tmp_path, server.base_url)
        assert main(["prompts", "--config", config, "--out", f"{out}/p.jsonl", "--summary", f"{out}/ps.json",
                     "--log", f"{out}/prompts.log"]) == 0
        assert main(["qa", "--config", config, "--prompts", f"{out}/p.jsonl", "--out", f"{out}/qa.jsonl",
                     "--summary", f"{out}/qs.json", "--log", f"{out}/qa.log"]) == 0
    assert server.auth_headers and set(server.auth_headers) == {f"Bearer {TEST_KEY}"}  # the key was used
    assert (out / "qa.jsonl").stat().st_size > 0 and (tmp_path / "cache" / "qa.jsonl").stat().st_size > 0
    assert files_containing(tmp_path, TEST_KEY) == []
    captured = capsys.readouterr()
    assert TEST_KEY not in captured.out + captured.err


def test_rejected_key_echoed_by_the_endpoint_is_not_logged(api_key, tmp_path, capsys):
    out = tmp_path / "out"
    with FakeOpenAI(lambda body, seen: error(401, f"Incorrect API key provided: {TEST_KEY}")) as server:
        config = write_config(tmp_path, server.base_url)
        code = main(["prompts", "--config", config, "--out", f"{out}/p.jsonl", "--summary", f"{out}/ps.json",
                     "--log", f"{out}/prompts.log"])
    assert code == 1
    captured = capsys.readouterr()
    assert "rejected the API key in $AGFSYNC_TEST_KEY (HTTP 401)" in captured.err
    assert TEST_KEY not in captured.out + captured.err
    assert files_containing(tmp_path, TEST_KEY) == []
    assert not (out / "p.jsonl").exists()


def test_log_formatter_masks_secret_values(api_key, tmp_path):
    import logging

    from agfsync.core.logs import job_logging

    with job_logging(tmp_path / "job.log", ["AGFSYNC_TEST_KEY"]):
        logging.getLogger("some.library").warning("request failed with key %s", TEST_KEY)
    text = (tmp_path / "job.log").read_text()
    assert "request failed with key ***" in text and TEST_KEY not in text


OTHER_KEY = "gm-test-41c0d9e8b7a6f5SECONDKEY"  # the key of another section (qa.llm) of the same config


def test_keys_echoed_in_error_bodies_and_answers_reach_no_file_and_no_log(api_key, monkeypatch, tmp_path, capsys):
    """Every key the config names is masked wherever anything is written: the prompts and QA
    outputs and summaries, the response caches, the rule logs, stderr, even when the
    endpoint puts a key in a 400 or 404 error body or in the answer text, and when the key
    echoed belongs to another stage's section."""
    monkeypatch.setenv("AGFSYNC_TEST_KEY2", OTHER_KEY)

    def echoing(body, seen):
        if body["messages"][0]["content"].startswith("You write descriptions"):
            cat, batch = category_and_batch(body)
            if cat == "Plants" and batch == 0:
                return error(404, f"The model does not exist or key {TEST_KEY} has no access")
            texts = json.loads(descriptions_json(cat, batch, 4))["descriptions"]
            if cat == "Animals":
                texts = [f"{texts[0]} {TEST_KEY}", f"{texts[1]} near {OTHER_KEY}"] + texts[2:]
            return ok(json.dumps({"descriptions": texts}))
        caption = caption_of(body)
        if caption.endswith("near ***"):  # the prompt that quoted OTHER_KEY, masked before it was written
            return error(400, f"Invalid value in request authorised by {OTHER_KEY}")
        answer = json.loads(qa_json(caption))
        answer["qa"][0]["question"] = f"Is the key {TEST_KEY} visible?"
        return ok(json.dumps(answer))

    out = tmp_path / "out"
    with FakeOpenAI(echoing) as server:
        config = write_config(tmp_path, server.base_url)
        cfg = yaml.safe_load(Path(config).read_text())
        cfg["qa"]["llm"]["api_key_env"] = "AGFSYNC_TEST_KEY2"
        Path(config).write_text(yaml.safe_dump(cfg))
        assert main(["prompts", "--config", config, "--out", f"{out}/p.jsonl", "--summary", f"{out}/ps.json",
                     "--log", f"{out}/prompts.log"]) == 0
        assert main(["qa", "--config", config, "--prompts", f"{out}/p.jsonl", "--out", f"{out}/qa.jsonl",
                     "--summary", f"{out}/qs.json", "--log", f"{out}/qa.log"]) == 0
    assert {f"Bearer {TEST_KEY}", f"Bearer {OTHER_KEY}"} <= set(server.auth_headers)
    prompts = [json.loads(line)["prompt"] for line in (out / "p.jsonl").read_text().splitlines()]
    assert sum("***" in p for p in prompts) == 2
    summary = json.loads((out / "ps.json").read_text())
    assert summary["skipped_requests"][0]["reasons"] == ["HTTP 404 The model does not exist or key *** has no access"]
    qa_summary = json.loads((out / "qs.json").read_text())
    assert qa_summary["skipped_bad_output"]["items"][0]["reasons"] == [
        "HTTP 400 Invalid value in request authorised by ***"]
    assert "Is the key *** visible?" in (out / "qa.jsonl").read_text()
    assert "***" in (tmp_path / "cache" / "prompts.jsonl").read_text()
    for key in (TEST_KEY, OTHER_KEY):
        assert files_containing(tmp_path, key) == []
    captured = capsys.readouterr()
    assert TEST_KEY not in captured.out + captured.err and OTHER_KEY not in captured.out + captured.err


def test_a_workflow_job_masks_the_keys_of_every_stage_not_only_its_own(api_key, monkeypatch, tmp_path):
    """Through Snakemake: a rule's params hold one stage's section only, but the prompts job
    must mask the QA stage's key too when its endpoint echoes it (a fresh process, so nothing
    registered by other tests helps)."""
    import subprocess

    from workflow_helpers import SNAKEMAKE, workdir

    monkeypatch.setenv("AGFSYNC_TEST_KEY2", OTHER_KEY)
    cwd = workdir(tmp_path / "run")

    def echoing(body, seen):
        cat, batch = category_and_batch(body)
        if cat == "Plants" and batch == 0:
            return error(400, "x" * 100 + f" by {OTHER_KEY} at index 104, across the cut at 120 characters")
        texts = json.loads(descriptions_json(cat, batch, 4))["descriptions"]
        return ok(json.dumps({"descriptions": [f"{texts[0]} near {OTHER_KEY}", *texts[1:]]}))

    with FakeOpenAI(echoing) as server:
        cfg = {"extends": "config/tiny.yaml", "llm_cache_dir": "resources/llm_cache",
               "prompts": {"categories": ["Animals", "Plants"], "per_category": 4, "descriptions_per_request": 4,
                           "llm": live_llm(server.base_url, min_yield=0.1)},
               "qa": {"llm": {"api_key_env": "AGFSYNC_TEST_KEY2"}}}
        (cwd / "config/leak.yaml").write_text(yaml.safe_dump(cfg))
        run = subprocess.run([SNAKEMAKE, "results/prompts/prompts.jsonl", "--cores", "1", "--configfile",
                              "config/leak.yaml"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    prompts = (cwd / "results/prompts/prompts.jsonl").read_text()
    assert prompts.count("near ***") == 2  # the first description of each answered batch (Animals 1, Plants 2)
    summary = json.loads((cwd / "results/prompts/prompts_summary.json").read_text())
    assert summary["skipped_requests"][0]["reasons"] == [
        "HTTP 400 " + "x" * 100 + " by *** at index ..."]  # masked first, then cut: no key prefix
    for key in (TEST_KEY, OTHER_KEY, OTHER_KEY[:12]):
        assert files_containing(cwd, key) == [] and key not in run.stdout + run.stderr
