"""The LLM layer under faults (issue 13): keys echoed by an endpoint, bad bytes and lone
surrogates in answers, torn cache tails, total outages, dripping bodies, long Retry-After."""

from __future__ import annotations

import json
import logging
import time

import pytest
from conftest import REPO, TEST_KEY, live_llm
from fake_openai import FakeOpenAI, error, ok, raw
from helpers import caption_of, category_and_batch, description, descriptions_json, qa_json, settings

from agfsync.core.io import read_jsonl
from agfsync.core.secrets import redact, register_secrets
from agfsync.llm.answers import YieldTooLow, ask_json, extract_json
from agfsync.llm.base import ItemFailure, LLMSettings, Request
from agfsync.llm.client import LLMClient, ResponseCache

REQ = Request(key="item/1", messages=({"role": "user", "content": "hello"},), seed=7)


def client_for(server, tmp_path, sleep=None, **overrides) -> LLMClient:
    settings = LLMSettings.from_dict(live_llm(server.base_url, **overrides))
    extra = {"sleep": sleep} if sleep else {}
    return LLMClient(settings, stage="test", cache_path=tmp_path / "cache.jsonl", **extra)


def cache_lines(tmp_path) -> list[dict]:
    path = tmp_path / "cache.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


# ----------------------------------------------------------------------------- item 1: secrets


def test_key_in_error_bodies_and_answers_is_masked_everywhere(api_key, tmp_path, caplog):
    """A 400 and a 404 whose bodies echo the key, and an answer that quotes it: the exception
    messages, the replies, the cache and the log records hold *** instead."""
    script = {
        "a": error(400, f"invalid request with key {TEST_KEY}"),
        "b": error(404, f"model not found for key {TEST_KEY}"),
        "c": ok(f'{{"said": "your key is {TEST_KEY}"}}'),
    }
    caplog.set_level(logging.DEBUG)
    with FakeOpenAI(lambda body, seen: script[body["messages"][0]["content"]]) as server:
        client = client_for(server, tmp_path)
        failures = []
        for name in "ab":
            with pytest.raises(ItemFailure) as info:
                client.complete(Request(key=name, messages=({"role": "user", "content": name},)))
            failures.append(str(info.value))
        outcome = ask_json(client, Request(key="c", messages=({"role": "user", "content": "c"},)), extract_json)
        assert outcome.value == {"said": "your key is ***"}
        rerun = client_for(server, tmp_path)
        with pytest.raises(ItemFailure) as info:  # replayed from the cache
            rerun.complete(Request(key="a", messages=({"role": "user", "content": "a"},)))
    assert failures == ["HTTP 400 invalid request with key ***", "HTTP 404 model not found for key ***"]
    assert str(info.value).startswith("HTTP 400 invalid request with key *** (in an earlier run")
    cache = (tmp_path / "cache.jsonl").read_text()
    assert TEST_KEY not in cache and cache.count("***") == 3
    assert TEST_KEY not in caplog.text


def test_log_records_of_the_llm_modules_are_masked_whatever_the_handler(api_key, caplog):
    register_secrets([TEST_KEY])
    caplog.set_level(logging.INFO)
    logging.getLogger("agfsync.stages.qa").warning("echo %s", TEST_KEY)
    try:
        raise RuntimeError(f"boom {TEST_KEY}")
    except RuntimeError:
        logging.getLogger("agfsync.llm.client").exception("failed")
    assert "echo ***" in caplog.text and "boom ***" in caplog.text and TEST_KEY not in caplog.text


def test_short_and_empty_values_are_not_secrets(caplog):
    register_secrets(["", None, "  ", "abc"])
    assert redact("abc and '' stay") == "abc and '' stay"
    assert "cannot be masked" in caplog.text


# ----------------------------------------------------------------------------- item 5: bad bytes, lone surrogates


def completion_bytes(content_json: str) -> bytes:
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "C"}}]}
    return json.dumps(body).encode().replace(b'"C"', content_json.encode())


def test_non_utf8_answer_is_a_named_skip_and_never_cached(api_key, tmp_path):
    bad = completion_bytes('"caf\\u00e9 "').replace(b"caf\\u00e9", b"caf\xe9\xff")
    with FakeOpenAI(lambda body, seen: raw(bad)) as server:
        client = client_for(server, tmp_path, max_retries=1)
        with pytest.raises(ItemFailure) as info:
            client.complete(REQ)
    offset = bad.index(b"\xe9")
    assert str(info.value) == (f"endpoint returned a body that is not valid UTF-8 (byte {offset} of {len(bad)}: "
                               f"{bad[offset:offset + 4]!r}) (gave up after 2 attempts)")
    assert info.value.outage and cache_lines(tmp_path) == []


@pytest.mark.parametrize("escaped", [False, True], ids=["in-content", "in-answer-json"])
def test_lone_surrogate_is_sanitised_cached_and_replayed(api_key, tmp_path, escaped):
    """A lone surrogate as a JSON escape of the completion (the content string holds U+D800), or
    inside the answer's own JSON text: either way U+FFFD reaches the parser and the cache."""
    text = '{"descriptions": ["A red fox \\ud800 asleep in snow"]}' if escaped else \
        '{"descriptions": ["A red fox \ud800 asleep in snow"]}'
    with FakeOpenAI(lambda body, seen: ok(text)) as server:
        outcome = ask_json(client_for(server, tmp_path), REQ, extract_json)
        assert outcome.value == {"descriptions": ["A red fox \ufffd asleep in snow"]}
        again = ask_json(client_for(server, tmp_path), REQ, extract_json)
    assert again.value == outcome.value and len(server.requests) == 1
    assert read_jsonl(tmp_path / "cache.jsonl")[0]["key"] == "item/1"  # valid UTF-8, no surrogate escape


def test_stage_with_lone_surrogates_and_bad_bytes_runs_and_reruns(demo_config, api_key, tmp_path):
    from agfsync.stages.prompts import write_prompts

    def script(body, seen):
        cat, batch = category_and_batch(body)
        if cat == "Animals" and batch == 0:
            return ok(json.dumps({"descriptions": [description(cat, 0, i) + " \ud800" for i in range(4)]},
                                 ensure_ascii=False))
        if cat == "Plants" and batch == 0:
            return raw(completion_bytes('"\xff"').replace(b"\xc3\xbf", b"\xff"))
        return ok(descriptions_json(cat, batch, 4))

    with FakeOpenAI(script) as server:
        cfg = demo_config
        cfg["llm_cache_dir"] = str(tmp_path / "cache")
        cfg["prompts"].update({"categories": ["Animals", "Plants"], "per_category": 4, "descriptions_per_request": 4,
                               "llm": live_llm(server.base_url, max_retries=1)})
        summary = write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
        first = (tmp_path / "p.jsonl").read_bytes()
        summary2 = write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
    records = read_jsonl(tmp_path / "p.jsonl")
    animals = [r["prompt"] for r in records if r["category"] == "Animals"]
    assert animals == [description("Animals", 0, i) + " \ufffd" for i in range(4)]
    assert summary["skipped_requests"][0]["key"] == "prompts/plants/batch000"
    assert summary["skipped_requests"][0]["reasons"][0].startswith("endpoint returned a body that is not valid UTF-8")
    assert summary["num_prompts"] == summary2["num_prompts"] == 8
    assert (tmp_path / "p.jsonl").read_bytes() == first


# ----------------------------------------------------------------------------- item 6: torn cache tail


def test_record_appended_after_a_torn_cache_tail_survives(tmp_path):
    path = tmp_path / "cache.jsonl"
    ResponseCache(path).put("h1", {"key": "a", "text": "one"})
    with path.open("a") as handle:
        handle.write('{"hash": "h2", "te')  # a crash mid-append
    cache = ResponseCache(path)
    assert len(cache) == 1
    cache.put("h3", {"key": "c", "text": "three"})
    reloaded = ResponseCache(path)
    assert len(reloaded) == 2 and reloaded.get("h3")["text"] == "three" and reloaded.get("h2") is None
    assert [json.loads(line)["hash"] for line in path.read_text().splitlines()] == ["h1", "h3"]


def test_stage_resumes_over_a_torn_cache(demo_config, api_key, tmp_path):
    from agfsync.llm.base import BudgetExceeded
    from agfsync.stages.prompts import write_prompts

    with FakeOpenAI(lambda body, seen: ok(descriptions_json(*category_and_batch(body), 4))) as server:
        cfg = demo_config
        cfg["llm_cache_dir"] = str(tmp_path / "cache")
        cfg["prompts"].update({"categories": ["Animals", "Plants", "People"], "per_category": 4,
                               "descriptions_per_request": 4,
                               "llm": live_llm(server.base_url, max_requests=2, concurrency=1)})
        with pytest.raises(BudgetExceeded):
            write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
        with (tmp_path / "cache" / "prompts.jsonl").open("ab") as handle:
            handle.write(b'{"hash": "0123", "text": "half an ans')  # killed mid-append
        cfg["prompts"]["llm"]["max_requests"] = 100
        summary = write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
        assert summary["llm"]["cache_hits"] == 2 and summary["llm"]["requests_sent"] == 1
        summary = write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")  # everything cached now
    assert summary["llm"]["cache_hits"] == 3 and summary["llm"]["requests_sent"] == 0
    assert len(server.requests) == 3 and summary["num_prompts"] == 12


# ----------------------------------------------------------------------------- item 7: outages


def test_outage_failures_are_not_cached_and_are_asked_again(api_key, tmp_path):
    outage = [True]
    with FakeOpenAI(lambda body, seen: error(503) if outage[0] else ok("back")) as server:
        with pytest.raises(ItemFailure, match=r"^HTTP 503 server error \(gave up after 2 attempts\)$") as info:
            client_for(server, tmp_path, max_retries=1).complete(REQ)
        assert info.value.outage and info.value.cause == "HTTP 503 server error"
        assert cache_lines(tmp_path) == []
        outage[0] = False
        assert client_for(server, tmp_path, max_retries=1).complete(REQ).text == "back"
    assert len(server.requests) == 3


def test_failure_cached_by_an_older_version_is_asked_again(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: ok("answer")) as server:
        client = client_for(server, tmp_path)
        (tmp_path / "cache.jsonl").write_text(json.dumps(
            {"hash": client.request_hash(REQ), "key": "item/1", "error": "HTTP 503 server error (gave up after 7 "
             "attempts)"}) + "\n")
        assert client_for(server, tmp_path).complete(REQ).text == "answer"
    assert len(server.requests) == 1


def prompts_config(demo_config, tmp_path, base_url, **llm):
    cfg = demo_config
    cfg["llm_cache_dir"] = str(tmp_path / "cache")
    cfg["prompts"].update({"categories": ["Animals", "Plants"], "per_category": 8, "descriptions_per_request": 4,
                           "max_requests_per_category": 3, "llm": live_llm(base_url, max_retries=1, **llm)})
    return cfg


def test_total_outage_fails_the_prompts_stage_and_a_rerun_asks_again(demo_config, api_key, tmp_path):
    from agfsync.stages.prompts import write_prompts

    up = [False]
    with FakeOpenAI(lambda body, seen: ok(descriptions_json(*category_and_batch(body), 4)) if up[0]
                    else error(503)) as server:
        cfg = prompts_config(demo_config, tmp_path, server.base_url)
        with pytest.raises(YieldTooLow) as info:
            write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
        assert str(info.value) == (
            "prompts: produced nothing (0 of 16 prompts); 6 of 6 requests failed, every failure was an outage "
            "(HTTP 503 server error x 6); outage failures are not cached: run the stage again when the endpoint "
            "is back")
        assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "s.json").exists()
        assert len(server.requests) == 12  # 2 categories x 3 batches x 2 attempts
        up[0] = True
        summary = write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
    assert summary["num_prompts"] == 16 and summary["llm"]["cache_hits"] == 0
    assert summary["failures"] == {"items": 4, "failed": 0, "outage": {}, "other": {}}


def test_total_outage_exits_non_zero_from_the_cli(demo_config, api_key, tmp_path, capsys):
    import yaml

    from agfsync.cli import main

    with FakeOpenAI(lambda body, seen: error(503)) as server:
        cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
        cfg = prompts_config(cfg, tmp_path, server.base_url)
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        code = main(["prompts", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "p.jsonl"),
                     "--summary", str(tmp_path / "s.json")])
    assert code == 1
    assert "agfsync prompts: error: prompts: produced nothing (0 of 16 prompts)" in capsys.readouterr().err


def test_qa_below_min_yield_fails_naming_the_causes(demo_config, api_key, tmp_path):
    from agfsync.stages.qa import write_qa

    prompts = [{"id": f"animals-{i:010d}", "category": "Animals", "prompt": description("qa", i)} for i in range(8)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))

    def script(body, seen):
        i = next(i for i, p in enumerate(prompts) if p["prompt"] == caption_of(body))
        if i < 3:
            return error(400, "context too long")
        if i < 5:
            return error(502)
        return ok(qa_json(caption_of(body)))

    with FakeOpenAI(script) as server:
        cfg = demo_config
        cfg["llm_cache_dir"] = str(tmp_path / "cache")
        cfg["qa"]["llm"] = live_llm(server.base_url, max_retries=0, min_yield=0.5)
        args = (tmp_path / "prompts.jsonl", tmp_path / "qa.jsonl", tmp_path / "s.json")
        with pytest.raises(YieldTooLow) as info:
            write_qa(settings(cfg, "qa_generate"), *args)
        assert str(info.value) == (
            "qa: produced 3 of 8 prompts (38%), below qa.llm.min_yield = 0.5; 5 of 8 prompts failed: 2 outage(s) "
            "(HTTP 502 server error x 2), 3 other(s) (HTTP 400 x 3); outage failures are not cached: run the stage "
            "again when the endpoint is back; the other failures are listed in the log (set qa.llm.retry_failed "
            "to ask again)")
        cfg["qa"]["llm"]["min_yield"] = 0.3
        summary = write_qa(settings(cfg, "qa_generate"), *args)
    assert summary["num_prompts_kept"] == 3
    assert summary["failures"] == {"items": 8, "failed": 5, "outage": {"HTTP 502 server error": 2},
                                   "other": {"HTTP 400": 3}}


def test_demo_recordings_meet_the_default_min_yield(demo_config, tmp_path, monkeypatch):
    from agfsync.stages.prompts import write_prompts
    from agfsync.stages.qa import write_qa

    monkeypatch.chdir(REPO)  # the demo's paths are relative to the repository

    assert demo_config["prompts"]["llm"]["min_yield"] == demo_config["qa"]["llm"]["min_yield"] == 0.5
    demo_config["llm_cache_dir"] = str(tmp_path / "cache")
    summary = write_prompts(settings(demo_config, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "ps.json")
    assert summary["num_prompts"] == 36
    summary = write_qa(settings(demo_config, "qa_generate"), tmp_path / "p.jsonl", tmp_path / "qa.jsonl", tmp_path / "qs.json")
    assert (summary["num_prompts_in"], summary["num_prompts_kept"]) == (36, 35)


# ----------------------------------------------------------------------------- item 8: timeouts, Retry-After


def test_dripping_body_is_cut_at_timeout_s(api_key, tmp_path):
    drip = ok('{"descriptions": ["' + "slow " * 60 + '"]}', drip_s=0.05, drip_bytes=2)  # ~9 s in all
    with FakeOpenAI(lambda body, seen: drip) as server:
        client = client_for(server, tmp_path, timeout_s=1.0, max_retries=0)
        start = time.monotonic()
        with pytest.raises(ItemFailure, match=r"^timeout after 1 s \(the answer was still arriving after \d+ bytes; "
                                              r"timeout_s bounds the whole request\) \(gave up after 1 attempts\)$"):
            client.complete(REQ)
        elapsed = time.monotonic() - start
    assert elapsed < 2.5, elapsed


@pytest.mark.parametrize("action", [
    ok('{"descriptions": ["' + "slow " * 60 + '"]}', drip_s=0.05, drip_bytes=2, drip_headers=True),
    error(503, "busy " * 60, drip_s=0.05, drip_bytes=2),  # the openai client reads an error body itself
    error(400, "bad " * 60, drip_s=0.05, drip_bytes=2),
    error(503, "busy " * 60, drip_s=0.05, drip_bytes=2, drip_headers=True),
], ids=["dripping-headers", "dripping-503-body", "dripping-400-body", "dripping-503-headers"])
def test_every_part_of_a_request_is_bounded_by_timeout_s(api_key, tmp_path, action):
    with FakeOpenAI(lambda body, seen: action) as server:
        client = client_for(server, tmp_path, timeout_s=1.0, max_retries=1, sleep=lambda s: None)
        start = time.monotonic()
        with pytest.raises(ItemFailure, match=r"^timeout after 1 s \((no answer yet|the answer was still arriving "
                                              r"after \d+ bytes); timeout_s bounds the whole request\) \(gave up after "
                                              r"2 attempts\)$") as err:
            client.complete(REQ)
        elapsed = time.monotonic() - start
    assert err.value.outage and 2.0 <= elapsed < 3.0, elapsed  # two attempts of 1 s each, not the ~10 s drip
    assert cache_lines(tmp_path) == []  # an outage: never cached


def test_a_byte_order_mark_before_the_json_is_accepted(api_key, tmp_path):
    body = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "caf\u00e9"}}]})
    with FakeOpenAI(lambda body_, seen: raw(b"\xef\xbb\xbf" + body.encode())) as server:
        assert client_for(server, tmp_path).complete(REQ).text == "caf\u00e9"


def test_retry_after_is_honoured_beyond_max_backoff(api_key, tmp_path):
    delays = []
    with FakeOpenAI(lambda body, seen: error(429, headers={"Retry-After": "1"}) if seen == 0 else ok("x")) as server:
        client = client_for(server, tmp_path, sleep=delays.append, max_backoff_s=0.05)
        assert client.complete(REQ).text == "x"
    assert len(delays) == 1 and delays[0] >= 1.0


def test_retry_after_ms_and_http_dates_are_understood(api_key, tmp_path):
    from email.utils import formatdate

    delays = []
    answers = iter([error(503, headers={"retry-after-ms": "2500"}),
                    error(503, headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)}), ok("x")])
    with FakeOpenAI(lambda body, seen: next(answers)) as server:
        assert client_for(server, tmp_path, sleep=delays.append).complete(REQ).text == "x"
    assert delays[0] >= 2.5 and 25 <= delays[1] <= 31


def test_retry_after_beyond_the_cap_fails_the_item_without_waiting(api_key, tmp_path):
    delays = []
    with FakeOpenAI(lambda body, seen: error(429, headers={"Retry-After": "600"})) as server:
        client = client_for(server, tmp_path, sleep=delays.append, max_retry_after_s=300)
        with pytest.raises(ItemFailure) as info:
            client.complete(REQ)
    assert str(info.value) == ("HTTP 429 rate limited: the endpoint asked to wait 600 s (Retry-After), longer than "
                               "test.llm.max_retry_after_s = 300 s; not retried")
    assert info.value.outage and delays == [] and len(server.requests) == 1 and cache_lines(tmp_path) == []


def test_judge_total_outage_fails_naming_the_config_key(demo_config, api_key, tmp_path):
    from PIL import Image

    from agfsync.stages import judge

    records = [{"id": f"p{i}", "prompt": f"prompt p{i}"} for i in range(3)]
    images = {r["id"]: (Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8), (255, 255, 255))) for r in records}
    with FakeOpenAI(lambda body, seen: error(503)) as server:
        demo_config["llm_cache_dir"] = str(tmp_path / "cache")
        demo_config["eval"]["judge"]["llm"] = live_llm(server.base_url, max_retries=0)
        with pytest.raises(YieldTooLow) as info:
            judge.judge_pairs(settings(demo_config, "eval_judge", model="sd15"), "sd15", records, images)
    assert str(info.value).startswith(
        "judge: produced nothing (0 of 3 pairs); 3 of 3 pairs failed, every failure was an outage "
        "(HTTP 503 server error x 3); outage failures are not cached")
