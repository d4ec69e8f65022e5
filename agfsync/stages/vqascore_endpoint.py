"""VQAScore through an OpenAI-compatible vision chat endpoint that returns log-probabilities
(e.g. vLLM serving an open VLM), for evaluation; the local model is agfsync.models.vqascore.

For each (item id, image, prompt) the endpoint is asked, in one user message of the text
question = 'Does this figure show "{prompt}"? Please answer yes or no.' followed by the
image as a PNG data URL (the order of t2v_metrics' GPT-4V model), for ONE token
(max_tokens 1) at temperature 0 with logprobs=true, top_logprobs=K (K = 20 by default,
the most OpenAI allows and vLLM's default --max-logprobs), and

    P(answer) = sum of exp(logprob) over the first generated token's top-K log-probabilities
                whose token, stripped of whitespace and case-folded, equals the answer
                ("Yes" -> "yes": "Yes", " yes", "YES" all count).

A token that is not among the top K contributes 0, so P is a lower bound of the model's
probability of the answer (tight when K covers every spelling of it); the sum is capped at
1. The answer should be a single token for the model (a first token can match only a
one-token answer). t2v_metrics' GPT-4V model (t2v_metrics/models/vqascore_models/
gpt4v_model.py) takes exp(logprob) of the FIRST matching top-K token, not the sum, and
falls back to 1 - P("no") when "yes" is not in its top K; this module sums the matching
spellings, and counts an absent answer as 0.

Requests go through agfsync.llm.client.LLMClient like the judge's (agfsync.stages.judge):
on-disk cache (a rerun sends nothing and gives the same numbers: the log-probabilities are
cached with the answer), retries, the request budget. A reply without log-probabilities is
a bad output: it is asked again, the same conversation under a fresh seed (key
"vqascore/{id}#repair{n}"; a repair text in the conversation would change the probability
being measured), up to llm.repair_attempts times, then the item is skipped with the
reason NO_LOGPROBS. (With llm.send_seed false the re-ask has the same cache key as the
first ask and replays its answer.) The stage fails (agfsync.llm.answers.YieldTooLow,
config key eval.vqascore.llm.min_yield) when fewer than llm.min_yield of the items were
scored.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable

from agfsync.core.secrets import redact
from agfsync.core.seeds import derive_seed
from agfsync.llm.answers import BadOutput, Outcome, check_yield, run_concurrently, tally_failures
from agfsync.llm.base import ItemFailure, LLMSettings, Reply, Request
from agfsync.llm.client import LLMClient
from agfsync.core.rewards import VQASCORE_ANSWER as ANSWER
from agfsync.core.rewards import VQASCORE_QUESTION as QUESTION
from agfsync.stages.judge import data_url  # the judge's: the image as a PNG data URL

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20
NO_LOGPROBS = "the endpoint returned no log-probabilities (it must support logprobs/top_logprobs, e.g. vLLM)"
NO_LOGPROBS_CAUSE = "the endpoint returned no log-probabilities"
SECTION = "eval.vqascore"



def build_request(seed: int, item_id: str, image, prompt: str, *, question: str = QUESTION,
                  top_logprobs: int = TOP_LOGPROBS) -> Request:
    content = [
        {"type": "text", "text": question.format(prompt=prompt)},
        {"type": "image_url", "image_url": {"url": data_url(image)}},
    ]
    return Request(key=f"vqascore/{item_id}", messages=({"role": "user", "content": content},),
                   seed=derive_seed(seed, "vqascore-request", item_id),
                   top_logprobs=top_logprobs, max_tokens=1, temperature=0.0)


def answer_probability(reply: Reply, answer: str = ANSWER) -> float:
    """P(answer) from the first token's top log-probabilities (module docstring), or BadOutput."""
    if not reply.top_logprobs:
        raise BadOutput(NO_LOGPROBS)
    target = answer.strip().casefold()
    total = sum(math.exp(logprob) for token, logprob in reply.top_logprobs if token.strip().casefold() == target)
    return min(1.0, total)


def ask_probability(client: LLMClient, request: Request, answer: str, seed: int, item_id: str) -> Outcome:
    """Ask; on a reply without log-probabilities ask the same conversation again under a new
    seed, up to llm.repair_attempts times. Never raises for a bad item (an Outcome with the
    reasons); stage-stopping errors (AuthError, BudgetExceeded) propagate."""
    outcome = Outcome(key=request.key)
    for attempt in range(client.settings.repair_attempts + 1):
        outcome.attempts = attempt + 1
        if attempt:
            request = dataclasses.replace(request, key=f"vqascore/{item_id}#repair{attempt}",
                                          seed=derive_seed(seed, "vqascore-request", item_id, "repair", attempt))
        try:
            reply = client.complete(request)
        except ItemFailure as err:
            outcome.reasons.append(str(err))
            outcome.cause, outcome.outage = err.cause, err.outage
            return outcome
        try:
            outcome.value = answer_probability(reply, answer)
            return outcome
        except BadOutput as err:
            outcome.reasons.append(redact(str(err)))
            outcome.cause, outcome.outage = NO_LOGPROBS_CAUSE, False
    return outcome


def endpoint_scores(llm_settings: LLMSettings, items: list[tuple[str, object, str]], *, seed: int, cache_path: str,
                    secrets: Iterable[str] = (), question: str = QUESTION, answer: str = ANSWER,
                    client: LLMClient | None = None, top_logprobs: int = TOP_LOGPROBS,
                    ) -> tuple[dict[str, float], dict[str, list[str]], dict]:
    """items: (item id, image, prompt). Returns ({id: P(answer)}, {skipped id: reasons}, client stats).

    `client`: an LLMClient to use instead of one built from llm_settings (then left open).
    Fails (agfsync.llm.answers.YieldTooLow) when nothing, or fewer than llm.min_yield of the
    items, was scored, naming the causes."""
    ids = [item_id for item_id, _, _ in items]
    if len(set(ids)) != len(ids):
        raise ValueError("VQAScore endpoint: item ids must be unique")
    if not answer.strip():
        raise ValueError("VQAScore endpoint: the answer is empty")
    own = client is None
    if own:
        client = LLMClient(llm_settings, stage="vqascore", cache_path=cache_path, secrets=secrets)

    def ask(item):
        item_id, image, prompt = item
        request = build_request(seed, item_id, image, prompt, question=question, top_logprobs=top_logprobs)
        return item_id, ask_probability(client, request, answer, seed, item_id)

    scores, skipped, seen = {}, {}, []
    try:
        for item_id, outcome in run_concurrently(ask, items, client.settings.concurrency):
            seen.append(outcome)
            if outcome.ok:
                scores[item_id] = outcome.value
            else:
                skipped[item_id] = outcome.reasons
                log.warning("vqascore: %s skipped: %s", item_id, "; ".join(outcome.reasons))
        client.log_summary()
        check_yield("vqascore", produced=len(scores), asked=len(items), unit="images", tally=tally_failures(seen),
                    requests="requests", min_yield=client.settings.min_yield, section=SECTION)
        return scores, skipped, client.stats.as_dict()
    finally:
        if own:
            client.close()
