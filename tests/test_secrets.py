"""API keys never reach logs, caches or outputs, even when an endpoint echoes them."""

from __future__ import annotations

import yaml
from conftest import REPO, TEST_KEY, live_llm
from fake_openai import FakeOpenAI, error, ok
from helpers import caption_of, category_and_batch, descriptions_json, qa_json

from agfsync.cli import main


def files_containing(root, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def write_config(tmp_path, base_url, **llm) -> str:
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
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

    from agfsync.logs import job_logging

    with job_logging(tmp_path / "job.log", ["AGFSYNC_TEST_KEY"]):
        logging.getLogger("some.library").warning("request failed with key %s", TEST_KEY)
    text = (tmp_path / "job.log").read_text()
    assert "request failed with key ***" in text and TEST_KEY not in text
