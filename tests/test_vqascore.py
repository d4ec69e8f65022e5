"""VQAScore: the local BLIP-2 flan-T5 scorer (agfsync.models.vqascore) against the model's own
teacher-forced loss, and the endpoint scorer (agfsync.stages.vqascore_endpoint) against a
local OpenAI-compatible server that returns log-probabilities."""

from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
import pytest
import torch
from conftest import live_llm
from fake_openai import FakeOpenAI, raw
from PIL import Image

from agfsync.core.seeds import derive_seed
from agfsync.llm.answers import YieldTooLow
from agfsync.llm.base import LLMSettings

PROMPT = 'a red "cube" on a {blue} table'


def images(n: int) -> list:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


# ----------------------------------------------------------------------------- local model


@pytest.fixture(scope="module")
def tiny_blip2(tmp_path_factory):
    from agfsync.demo.tiny_models import build_blip2

    out = tmp_path_factory.mktemp("vqascore") / "blip2"
    build_blip2(out)
    return str(out)


@pytest.fixture(scope="module")
def scorer(tiny_blip2):
    """In float64: the tiny model's scores are ~1e-6 (a random 710-token vocabulary), so that the
    comparisons below can be exact to a relative 1e-6 (float32 rounding alone is ~2e-6 there)."""
    from agfsync.models.vqascore import load_vqascore

    loaded = load_vqascore(tiny_blip2, device="cpu", batch_size=2)
    loaded.model.to(torch.float64)
    return loaded


def reference_score(scorer, image, prompt: str, question: str, answer: str) -> float:
    """Independently: the processor's inputs for 'Question: {q}', the model's forward with
    labels = the tokenized answer (</s> included), exp(-mean cross-entropy) over the labels."""
    processor, model = scorer.processor, scorer.model
    text = "Question: " + question.format(prompt=prompt)
    inputs = processor(images=image, text=text, return_tensors="pt")
    labels = torch.tensor([processor.tokenizer(answer.format(prompt=prompt)).input_ids])
    assert labels[0, -1].item() == processor.tokenizer.eos_token_id
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    ce = torch.nn.functional.cross_entropy(out.logits[0].double(), labels[0], reduction="mean")
    assert torch.allclose(ce, out.loss.double(), rtol=1e-9)  # the model's own loss: the same mean CE
    return math.exp(-ce.item())


def test_vqascore_local_equals_teacher_forced_likelihood(scorer, tiny_blip2):
    from agfsync.models.vqascore import ANSWER, QUESTION

    pictures = images(3)
    scores = scorer.score(pictures, PROMPT)
    assert scores.dtype == np.float64 and scores.shape == (3,)
    assert np.all((scores >= 0) & (scores <= 1))
    expected = [reference_score(scorer, image, PROMPT, QUESTION, ANSWER) for image in pictures]
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=0)
    # the inputs are built as Blip2Processor builds them: <image> placeholders + the question
    ids = scorer.processor(images=pictures[0], text=scorer.question_text(PROMPT)).input_ids[0]
    assert list(ids) == scorer.input_ids(PROMPT)
    assert scorer.question_text("x") == 'Question: Does this figure show "x"? Please answer yes or no.'
    # as loaded (float32 on the CPU): the same numbers up to float32 rounding
    from agfsync.models.vqascore import load_vqascore

    fp32 = load_vqascore(tiny_blip2, device="cpu")
    assert fp32.model.dtype == torch.float32
    np.testing.assert_allclose(fp32.score(pictures, PROMPT), scores, rtol=1e-4, atol=0)


def test_vqascore_local_batch_equals_one_by_one_and_answer_matters(scorer):
    from agfsync.models.vqascore import VQAScoreScorer

    pictures = images(3)
    batched = scorer.score(pictures, PROMPT)  # batch_size 2: a full batch and a partial one
    single = VQAScoreScorer(scorer.model, scorer.processor, "cpu", batch_size=1)
    np.testing.assert_allclose(batched, single.score(pictures, PROMPT), rtol=1e-6, atol=0)
    assert scorer.score([], PROMPT).shape == (0,)

    lower = VQAScoreScorer(scorer.model, scorer.processor, "cpu", answer="yes")
    other = lower.score(pictures, PROMPT)
    assert np.all((other >= 0) & (other <= 1)) and not np.allclose(other, batched, rtol=1e-3)
    expected = [reference_score(scorer, image, PROMPT, lower.question, "yes") for image in pictures]
    np.testing.assert_allclose(other, expected, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="only the field"):
        VQAScoreScorer(scorer.model, scorer.processor, "cpu", question="Does it show {}?")


# ----------------------------------------------------------------------------- endpoint

TOP = [("Yes", -0.1), (" yes", -3.0), ("No", -2.5)]
GOLDEN = math.exp(-0.1) + math.exp(-3.0)  # 0.9546... ("Yes" and " yes"; "No" is not the answer)
NO_LOGPROBS = "the endpoint returned no log-probabilities (it must support logprobs/top_logprobs, e.g. vLLM)"


def completion(top_logprobs) -> bytes:
    choice = {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Yes"}}
    if top_logprobs is not None:
        choice["logprobs"] = {"content": [{
            "token": top_logprobs[0][0], "logprob": top_logprobs[0][1], "bytes": None,
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top_logprobs],
        }]}
    return json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake-vlm",
                       "choices": [choice], "usage": {"prompt_tokens": 9, "completion_tokens": 1,
                                                      "total_tokens": 10}}).encode()


def items(n: int) -> list:
    return [(f"p{i}", image, f"prompt {i}") for i, image in enumerate(images(n))]


def run_scores(server, tmp_path, entries, **overrides):
    from agfsync.stages.vqascore_endpoint import endpoint_scores

    settings = LLMSettings.from_dict(live_llm(server.base_url, **overrides))
    return endpoint_scores(settings, entries, seed=5, cache_path=str(tmp_path / "vqascore.jsonl"))


def test_vqascore_endpoint_sums_the_answer_probabilities_and_caches_them(api_key, tmp_path):
    entries = items(2)
    with FakeOpenAI(lambda body, seen: raw(completion(TOP))) as server:
        scores, skipped, stats = run_scores(server, tmp_path, entries)
        assert scores == {"p0": pytest.approx(GOLDEN, abs=1e-12), "p1": pytest.approx(GOLDEN, abs=1e-12)}
        assert skipped == {} and stats["requests_sent"] == 2 and stats["answered"] == 2
        sent = len(server.requests)
        again, skipped_again, stats_again = run_scores(server, tmp_path, entries)  # a rerun: the cache
        assert len(server.requests) == sent == 2
    assert again == scores and skipped_again == {}
    assert stats_again["requests_sent"] == 0 and stats_again["cache_hits"] == 2

    body = next(b for b in server.requests if '"prompt 0"' in b["messages"][0]["content"][0]["text"])
    assert (body["logprobs"], body["top_logprobs"], body["max_tokens"], body["temperature"]) == (True, 20, 1, 0.0)
    assert body["seed"] == derive_seed(5, "vqascore-request", "p0")
    text, image = body["messages"][0]["content"]
    assert text == {"type": "text", "text": 'Does this figure show "prompt 0"? Please answer yes or no.'}
    url = image["image_url"]["url"]
    assert image["type"] == "image_url" and url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert np.array_equal(np.asarray(decoded), np.asarray(entries[0][1]))
    cached = [json.loads(line) for line in (tmp_path / "vqascore.jsonl").read_text().splitlines()]
    assert {c["key"] for c in cached} == {"vqascore/p0", "vqascore/p1"}
    assert cached[0]["top_logprobs"] == [list(pair) for pair in TOP]


def test_vqascore_endpoint_without_logprobs_skips_and_fails_the_yield(api_key, tmp_path):
    def responder(body, seen):  # logprobs for prompt 0 only
        text = body["messages"][0]["content"][0]["text"]
        return raw(completion(TOP if '"prompt 0"' in text else None))

    entries = items(2)
    with FakeOpenAI(responder) as server:
        scores, skipped, stats = run_scores(server, tmp_path / "half", entries, min_yield=0.5, repair_attempts=1)
        assert scores == {"p0": pytest.approx(GOLDEN, abs=1e-12)}
        assert skipped == {"p1": [NO_LOGPROBS, NO_LOGPROBS]}  # asked, then asked again once (repair_attempts 1)
        assert stats["requests_sent"] == 3
        seeds = [b.get("seed") for b in server.requests if '"prompt 1"' in b["messages"][0]["content"][0]["text"]]
        assert len(set(seeds)) == 2  # the re-ask is a new request (a fresh seed), not the cached answer

        with pytest.raises(YieldTooLow) as info:
            run_scores(server, tmp_path / "strict", entries, min_yield=1.0, repair_attempts=0)
    assert str(info.value).startswith(
        "vqascore: produced 1 of 2 images (50%), below eval.vqascore.llm.min_yield = 1; "
        "1 of 2 requests failed (the endpoint returned no log-probabilities x 1)")
    with FakeOpenAI(lambda body, seen: raw(completion(None))) as server:
        with pytest.raises(YieldTooLow, match="produced nothing"):
            run_scores(server, tmp_path / "none", entries, repair_attempts=0)


def test_vqascore_endpoint_old_cache_entries_and_parsing(api_key, tmp_path):
    """A cache entry written before log-probabilities were kept still loads (without them);
    the parser keeps finite (token, logprob) pairs only."""
    from agfsync.llm.base import Reply, Request
    from agfsync.llm.client import LLMClient
    from agfsync.llm.providers import _parse_completion
    from agfsync.stages.vqascore_endpoint import answer_probability

    with FakeOpenAI(lambda body, seen: raw(completion(TOP))) as server:
        settings = LLMSettings.from_dict(live_llm(server.base_url))
        client = LLMClient(settings, stage="test", cache_path=tmp_path / "cache.jsonl")
        request = Request(key="k", messages=({"role": "user", "content": "hi"},), seed=1)
        client.cache.put(client.request_hash(request), {"key": "k", "text": "old", "finish_reason": "stop"})
        reply = client.complete(request)
    assert reply.cached and reply.text == "old" and reply.top_logprobs is None and server.requests == []
    assert "logprobs" not in client._params(request)  # a request without top_logprobs: body and key unchanged

    body = json.loads(completion(TOP))
    body["choices"][0]["logprobs"]["content"][0]["top_logprobs"] += [{"token": 3, "logprob": -1.0},
                                                                     {"token": "yes", "logprob": "x"}]
    parsed = _parse_completion(json.dumps(body).encode(), "application/json")
    assert parsed.top_logprobs == tuple(TOP)
    both = Reply(text="", top_logprobs=(("YES ", -1.0), ("no", -0.5)))
    assert answer_probability(both) == pytest.approx(math.exp(-1))
    assert answer_probability(Reply(text="", top_logprobs=(("No", -0.01),))) == 0.0


def test_vqascore_endpoint_path_loads_no_torch():
    """The endpoint's job holds no GPU and runs no model: importing its module loads no torch."""
    import subprocess
    import sys

    code = "import sys, agfsync.stages.vqascore_endpoint; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
