"""The vocabulary shared by the LLM layer (client, providers, answers): settings, request and
reply, the error classes, and the decoding boundary (`clean_text`, `_short`).

Used by the prompt and QA stages (rules prompts_generate, qa_generate) and by the judge
(rule eval_judge), through agfsync.llm.client and agfsync.llm.answers. It imports nothing
of the LLM layer, so that the client, the providers and the answers can all import it
without a cycle. Pure: no torch, no `openai`.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from agfsync.core.sections import LLMSettings  # noqa: F401 (the settings of one endpoint, typed in core)
from agfsync.core.secrets import redact

# The openai client and its HTTP stack log request details at DEBUG/INFO; keep them quiet
# so that nothing they might print (headers, bodies) reaches a rule log.
for _name in ("openai", "httpx", "httpx2", "httpcore", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# ----------------------------------------------------------------------------- decoding boundary

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str | None) -> tuple[str | None, int]:
    """(text as valid Unicode with secrets masked, number of lone surrogates replaced).

    A JSON string escape can encode a lone surrogate ("\\ud800"); json.loads returns it, and
    no UTF-8 file (the cache, the outputs) can hold it, so each becomes U+FFFD."""
    if text is None:
        return None, 0
    text, count = _SURROGATE.subn("\ufffd", str(text))
    return redact(text), count


def _short(text: str, limit: int = 120) -> str:
    """One line of at most `limit` characters, secrets masked BEFORE the cut (a key cut in
    two would no longer match its mask)."""
    text = " ".join(redact(str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- errors


class LLMError(RuntimeError):
    """A failure that stops the stage (bad key, budget exhausted, unusable endpoint, too little produced)."""


class AuthError(LLMError):
    pass


class BudgetExceeded(LLMError):
    pass


class ItemFailure(Exception):
    """One request could not be answered (retries exhausted, 4xx, missing recording).
    The item is skipped with this reason; the stage goes on.

    `outage`: the failure says nothing about the request (5xx, timeouts, connection errors,
    rate limits, undecodable bodies: retries exhausted); such failures are never cached.
    `cause`: the short cause, without attempt counts, for the stage's failure tally."""

    def __init__(self, reason: str, *, outage: bool = False, cause: str | None = None):
        super().__init__(reason)
        self.outage = outage
        self.cause = cause or reason


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Request:
    key: str  # identity of the item, e.g. "qa/animals-1a2b3c4d5e"; names a recorded answer
    messages: tuple[dict, ...]
    seed: int | None = None
    # Per-request parameters (None: not sent / the llm settings' value); a field left at None
    # leaves the request body and its cache key as they were before the field existed.
    top_logprobs: int | None = None  # K: ask for logprobs=true, top_logprobs=K (OpenAI chat API; vLLM)
    max_tokens: int | None = None  # overrides llm.max_tokens (e.g. 1 for a one-token answer)
    temperature: float | None = None  # overrides llm.temperature


@dataclasses.dataclass(frozen=True)
class Reply:
    text: str | None
    finish_reason: str | None = None
    refusal: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    # The first generated token's top log-probabilities, ((token, logprob), ...), when the
    # request asked for them (Request.top_logprobs) and the endpoint returned them; else None.
    top_logprobs: tuple[tuple[str, float], ...] | None = None


def logprob_pairs(value) -> tuple[tuple[str, float], ...] | None:
    """Stored top log-probabilities ([[token, logprob], ...], as the cache and recordings hold
    them) as Reply.top_logprobs; None when absent (an entry written before they were kept)."""
    if not isinstance(value, (list, tuple)):
        return None
    return tuple((pair[0], float(pair[1])) for pair in value
                 if isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
                 and isinstance(pair[1], (int, float)) and not isinstance(pair[1], bool))
