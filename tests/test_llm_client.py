"""The LLM client against a local OpenAI-compatible server: retries, errors, cache, budget."""

from __future__ import annotations

import json

import pytest
from conftest import TEST_KEY, live_llm
from fake_openai import FakeOpenAI, error, html_page, ok

from agfsync.llm.answers import BadOutput, ask_json, extract_json
from agfsync.llm.base import AuthError, BudgetExceeded, ItemFailure, LLMSettings, Reply, Request
from agfsync.llm.client import LLMClient

REQ = Request(key="item/1", messages=({"role": "user", "content": "hello"},), seed=7)


def client_for(server, tmp_path, **overrides) -> LLMClient:
    settings = LLMSettings.from_dict(live_llm(server.base_url, **overrides))
    return LLMClient(settings, stage="test", cache_path=tmp_path / "cache.jsonl")


@pytest.mark.parametrize(
    "failure",
    [error(429, headers={"Retry-After": "0"}), error(500), error(503), html_page(502)],
    ids=["429", "500", "503", "html-502"],
)
def test_transient_errors_are_retried(failure, api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: failure if seen < 2 else ok('{"a": 1}')) as server:
        client = client_for(server, tmp_path)
        reply = client.complete(REQ)
    assert reply.text == '{"a": 1}'
    assert len(server.requests) == 3
    assert client.stats.retries == 2 and client.stats.requests_sent == 3


def test_slow_answer_times_out_and_is_retried(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: ok("late", delay_s=1.0) if seen == 0 else ok("fast")) as server:
        client = client_for(server, tmp_path, timeout_s=0.3)
        assert client.complete(REQ).text == "fast"
    assert client.stats.retries == 1


def test_retries_exhausted_is_an_item_failure(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: error(500)) as server:
        client = client_for(server, tmp_path, max_retries=2)
        with pytest.raises(ItemFailure, match=r"HTTP 500 server error \(gave up after 3 attempts\)"):
            client.complete(REQ)
    assert len(server.requests) == 3


def test_client_error_is_not_retried(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: error(400, "bad request: max_tokens too large")) as server:
        client = client_for(server, tmp_path)
        with pytest.raises(ItemFailure, match="HTTP 400"):
            client.complete(REQ)
    assert len(server.requests) == 1


def test_401_fails_at_once_naming_the_variable_and_hiding_the_key(api_key, tmp_path):
    echo = error(401, f"Incorrect API key provided: {TEST_KEY}")
    with FakeOpenAI(lambda body, seen: echo) as server:
        client = client_for(server, tmp_path)
        with pytest.raises(AuthError) as info:
            client.complete(REQ)
    assert len(server.requests) == 1
    assert "AGFSYNC_TEST_KEY" in str(info.value) and "HTTP 401" in str(info.value)
    assert TEST_KEY not in str(info.value)
    assert server.auth_headers == [f"Bearer {TEST_KEY}"]


def test_missing_key_fails_before_any_request(monkeypatch, tmp_path):
    monkeypatch.delenv("AGFSYNC_TEST_KEY", raising=False)
    with FakeOpenAI(lambda body, seen: ok("x")) as server:
        with pytest.raises(AuthError, match="environment variable AGFSYNC_TEST_KEY is not set"):
            client_for(server, tmp_path)
    assert server.requests == []


def test_request_parameters_and_seed_reach_the_endpoint(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: ok("x")) as server:
        client_for(server, tmp_path).complete(REQ)
    body = server.requests[0]
    assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (
        "fake-model", 0.9, 0.7, 512, 7)
    assert body["messages"] == [{"role": "user", "content": "hello"}]


def test_cache_makes_a_rerun_free_and_identical(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: ok(f"answer {seen}")) as server:
        first = client_for(server, tmp_path).complete(REQ)
        again = client_for(server, tmp_path)  # a new process would build a new client
        second = again.complete(REQ)
    assert len(server.requests) == 1
    assert first.text == second.text == "answer 0"
    assert second.cached and again.stats.requests_sent == 0 and again.stats.cache_hits == 1
    line = json.loads((tmp_path / "cache.jsonl").read_text().splitlines()[0])
    assert line["text"] == "answer 0" and line["key"] == "item/1"


def test_cache_key_covers_model_and_parameters(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: ok("x")) as server:
        client_for(server, tmp_path).complete(REQ)
        client_for(server, tmp_path, temperature=0.1).complete(REQ)
        client_for(server, tmp_path, model="other").complete(REQ)
    assert len(server.requests) == 3


def test_torn_cache_line_is_ignored(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: ok("x")) as server:
        client_for(server, tmp_path).complete(REQ)
        with (tmp_path / "cache.jsonl").open("a") as handle:
            handle.write('{"hash": "abc", "te')  # a crash mid-write
        client = client_for(server, tmp_path)
        assert client.complete(REQ).cached
    assert len(server.requests) == 1


def test_budget_stops_the_stage(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: error(500)) as server:
        client = client_for(server, tmp_path, max_requests=2, max_retries=5)
        with pytest.raises(BudgetExceeded, match=r"request budget of 2 exhausted \(test.llm.max_requests\)"):
            client.complete(REQ)
    assert len(server.requests) == 2


def test_token_accounting(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: ok("x", usage=(100, 25))) as server:
        client = client_for(server, tmp_path)
        for i in range(3):
            client.complete(Request(key=f"k{i}", messages=({"role": "user", "content": str(i)},)))
    assert (client.stats.prompt_tokens, client.stats.completion_tokens, client.stats.answered) == (300, 75, 3)


@pytest.mark.parametrize(
    "text, finish, reason",
    [
        ("", "stop", "empty response"),
        (None, "stop", "empty response"),
        ("Sure! Here you go.", "stop", "not JSON"),
        ('{"descriptions": ["a", "b"', "length", "truncated JSON (the answer hit max_tokens)"),
        ('{"descriptions": ["a" "b"]}', "stop", "invalid JSON"),
        ("<!DOCTYPE html><html>502</html>", "stop", "an HTML page instead of JSON"),
        ("I'm sorry, but I can't help with that.", "stop", "refusal"),
        ("[1, 2]", "stop", "expected a JSON object, got list"),
    ],
)
def test_extract_json_rejects_bad_output(text, finish, reason):
    with pytest.raises(BadOutput, match=reason.replace("(", r"\(").replace(")", r"\)")):
        extract_json(Reply(text=text, finish_reason=finish))


def test_extract_json_accepts_fences_and_preamble():
    assert extract_json(Reply(text='Here:\n```json\n{"a": [1]}\n```')) == {"a": [1]}
    assert extract_json(Reply(text='Result: {"a": 2} hope it helps')) == {"a": 2}


def test_ask_json_repairs_with_the_reason(api_key, tmp_path):
    answers = {0: "not json at all", 1: '{"ok": true}'}
    with FakeOpenAI(lambda body, seen: ok(answers[len(body["messages"]) // 2])) as server:
        outcome = ask_json(client_for(server, tmp_path), REQ, extract_json)
    assert outcome.ok and outcome.value == {"ok": True} and outcome.attempts == 2
    repair = server.requests[1]["messages"]
    assert repair[1] == {"role": "assistant", "content": "not json at all"}
    assert repair[2]["content"].startswith("Your previous answer could not be used: not JSON")


def test_ask_json_gives_up_after_repair_attempts(api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: ok("nope")) as server:
        outcome = ask_json(client_for(server, tmp_path, repair_attempts=2), REQ, extract_json)
    assert not outcome.ok and len(outcome.reasons) == 3 and len(server.requests) == 3


def test_permanent_failures_are_replayed_on_rerun_unless_retry_failed(api_key, tmp_path):
    answers = iter([error(400, "bad request: unknown parameter"), ok("recovered")])
    with FakeOpenAI(lambda body, seen: next(answers)) as server:
        with pytest.raises(ItemFailure, match="HTTP 400 bad request: unknown parameter$"):
            client_for(server, tmp_path, max_retries=1).complete(REQ)
        with pytest.raises(ItemFailure, match=r"^HTTP 400 bad request: unknown parameter \(in an earlier run; "
                                              r"set llm.retry_failed to ask again\)$"):
            client_for(server, tmp_path, max_retries=1).complete(REQ)
        assert len(server.requests) == 1  # the rerun sent nothing
        reply = client_for(server, tmp_path, max_retries=1, retry_failed=True).complete(REQ)
    assert reply.text == "recovered" and len(server.requests) == 2
    # the success now shadows the recorded failure
    assert client_for(server, tmp_path, max_retries=1).complete(REQ).text == "recovered"
