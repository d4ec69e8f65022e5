"""The LLM client of the prompt and QA stages (rules prompts_generate, qa_generate) and of the
judge (rule eval_judge): `LLMClient` sends one request and returns its Reply.

It talks, through agfsync.llm.providers (the only module that touches the `openai`
package), to any OpenAI-compatible chat endpoint (OpenAI, Gemini's OpenAI-compatible endpoint, vLLM, Ollama) and adds
what a 45k-prompt run needs:

- an on-disk response cache keyed by the full request (provider, endpoint, model,
  messages, parameters): a rerun sends no request for what was answered and gives
  identical outputs, and a killed run loses nothing already answered (one fsynced JSONL
  line per answer, appended with agfsync.core.io.append_jsonl: a torn last line left by a
  crash is cut, never swallows the next answer, never fails a resume);
- retries with exponential backoff and jitter on 429, 5xx, timeouts and connection
  errors; a Retry-After is honoured in full up to llm.max_retry_after_s (beyond it the
  item fails, saying so); a per-run budget of HTTP requests (BudgetExceeded);
- `timeout_s` bounds each HTTP request as a whole (connect, headers and the full body),
  not only each read: a server that drips its answer is given up at timeout_s;
- one decoding boundary (agfsync.llm.base.clean_text): a body is decoded once, as strict
  UTF-8 JSON, and an answer's text is sanitised there (lone surrogates, which no UTF-8 file
  can hold, become U+FFFD); an undecodable body is a named item failure, never a crash or a
  poisoned cache entry;
- failure classes: outage-type failures (5xx, 408, 429, timeouts, connection errors,
  undecodable or non-chat bodies, once their retries are exhausted) are never cached,
  so a rerun asks again; permanent ones (other 4xx) are cached and replayed (ask again
  with llm.retry_failed);
- token accounting, logged per stage;
- on request (Request.top_logprobs = K: logprobs=true, top_logprobs=K in the body), the
  first generated token's top log-probabilities (Reply.top_logprobs), kept with the answer
  in the cache (an entry written without them loads with None); Request.max_tokens and
  Request.temperature override the settings for one request. Unset, none of these changes
  the body or the cache key.

The settings, Request, Reply and the error classes are in agfsync.llm.base; parsing the
answers, the repair re-asks, the stage's yield and the concurrency limit are in
agfsync.llm.answers. A `file` provider replays recorded answers (JSONL of {"key",
"content"}) through the same path, for the offline demo; a `world` provider starts the
world writer on 127.0.0.1 and asks it over HTTP like any endpoint (close() stops it).
API keys are read from the environment variable named in config and held only in the
openai client. Every key the
config names is a secret (agfsync.core.secrets: `register_secrets`, `secret_values`):
whatever leaves this layer (answer text given to parsers, cache entries, exception
messages, skip reasons, the stages' summaries and records, log records of the LLM modules)
passes `redact`, which masks it, so that an endpoint echoing a key in an error body or an
answer cannot put it in a file or a log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agfsync.core.secrets import redact, redact_obj, register_secrets
from agfsync.llm.base import (BudgetExceeded, ItemFailure, LLMError, LLMSettings, Reply, Request, _Transient,
                               clean_text, logprob_pairs)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- accounting


@dataclasses.dataclass
class Stats:
    requests_sent: int = 0  # HTTP attempts, retries included (what the budget counts)
    retries: int = 0
    cache_hits: int = 0
    answered: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- cache


class ResponseCache:
    """Append-only JSONL of answers keyed by a hash of the full request.

    One line per answer, appended with agfsync.core.io.append_jsonl (flushed and fsynced as it
    arrives): a crash loses at most the line being written; a torn last line is skipped
    on load and cut before the next append, both with a warning naming file and byte
    offset; a damaged line elsewhere (an older version appended after a torn line) is
    skipped with a warning naming file, line and offset: that answer is asked again."""

    def __init__(self, path: str | os.PathLike):
        from agfsync.core.io import read_jsonl

        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        if self.path.exists():
            for entry in read_jsonl(self.path, required=("hash",), torn_tail="skip", bad_lines="skip"):
                self._entries[entry["hash"]] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> dict | None:
        return self._entries.get(digest)

    def put(self, digest: str, entry: dict) -> None:
        from agfsync.core.io import append_jsonl

        entry = redact_obj({"hash": digest, **entry})
        with self._lock:
            append_jsonl(self.path, entry)
            self._entries[digest] = entry


# ----------------------------------------------------------------------------- client


class LLMClient:
    """Cache, retries, budget, accounting, sanitising and redaction around one provider. Thread-safe.

    Everything that leaves it (replies, cache entries, ItemFailure and LLMError messages) is
    sanitised (valid Unicode) and has every registered secret masked (`redact`)."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        stage: str,
        cache_path: str | os.PathLike | None,
        provider: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        secrets: Iterable[str] = (),
    ):
        self.settings = settings
        self.stage = stage
        register_secrets(secrets)
        if provider is None:
            from agfsync.llm.providers import make_provider

            provider = make_provider(settings, stage)
        self.provider = provider
        # Recorded answers are their own cache; a live endpoint's answers are cached on disk.
        self.cache = ResponseCache(cache_path) if cache_path and settings.provider != "file" else None
        self.stats = Stats()
        self._lock = threading.Lock()
        self._sleep = sleep
        self._jitter = random.Random()  # timing only; never affects outputs

    def _params(self, request: Request) -> dict:
        params = {
            "temperature": self.settings.temperature if request.temperature is None else float(request.temperature),
            "top_p": self.settings.top_p,
            "max_tokens": self.settings.max_tokens if request.max_tokens is None else int(request.max_tokens),
        }
        if self.settings.send_seed and request.seed is not None:
            params["seed"] = int(request.seed)
        if request.top_logprobs is not None:  # absent otherwise: older cache keys stay valid
            params["logprobs"] = True
            params["top_logprobs"] = int(request.top_logprobs)
        return params

    def request_hash(self, request: Request) -> str:
        identity = {
            "provider": self.settings.provider,
            "endpoint": getattr(self.provider, "endpoint", None),
            "model": self.settings.model,
            "messages": list(request.messages),
            "params": self._params(request),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _take_budget(self) -> None:
        with self._lock:
            if self.stats.requests_sent >= self.settings.max_requests:
                raise BudgetExceeded(
                    f"{self.stage}: request budget of {self.settings.max_requests} exhausted "
                    f"({self.stage}.llm.max_requests); answers so far are cached, so a rerun continues from here"
                )
            self.stats.requests_sent += 1

    def complete(self, request: Request) -> Reply:
        """The answer to `request` (from the cache when there), or ItemFailure; LLMError stops the stage."""
        try:
            return self._complete(request)
        except ItemFailure as err:
            raise ItemFailure(redact(str(err)), outage=err.outage, cause=redact(err.cause)) from None
        except LLMError as err:
            message = redact(str(err))
            if message == str(err):
                raise
            raise type(err)(message) from None

    def _complete(self, request: Request) -> Reply:
        digest = self.request_hash(request)
        hit = self.cache.get(digest) if self.cache is not None else None
        if hit is not None and "error" in hit and (self.settings.retry_failed or hit.get("kind") != "permanent"):
            # Ask again what failed in an earlier run: on request (llm.retry_failed), and always for an
            # entry of an older version that does not say its failure was permanent (it may be an outage).
            hit = None
        if hit is not None:
            with self._lock:
                self.stats.cache_hits += 1
            if "error" in hit:
                raise ItemFailure(f"{hit['error']} (in an earlier run; set llm.retry_failed to ask again)",
                                  cause=hit.get("cause") or hit["error"])
            return self._boundary(request, Reply(text=hit.get("text"), finish_reason=hit.get("finish_reason"),
                                                 refusal=hit.get("refusal"), cached=True,
                                                 top_logprobs=logprob_pairs(hit.get("top_logprobs"))))
        params = self._params(request)
        attempt = 0
        while True:
            self._take_budget()
            try:
                reply = self.provider.send(request, params)
                break
            except ItemFailure as err:
                if not err.outage:
                    self._remember_failure(digest, request, str(err), err.cause)
                raise
            except _Transient as err:
                cap = self.settings.max_retry_after_s
                if err.retry_after is not None and err.retry_after > cap:
                    # Not cached (an outage): a rerun asks again.
                    raise ItemFailure(
                        f"{err}: the endpoint asked to wait {err.retry_after:g} s (Retry-After), longer than "
                        f"{self.stage}.llm.max_retry_after_s = {cap:g} s; not retried",
                        outage=True, cause=str(err)) from None
                if attempt >= self.settings.max_retries:
                    raise ItemFailure(f"{err} (gave up after {attempt + 1} attempts)", outage=True,
                                      cause=str(err)) from None
                delay = min(self.settings.max_backoff_s, self.settings.backoff_s * 2**attempt)
                delay *= 0.5 + self._jitter.random()  # decorrelate concurrent retries
                if err.retry_after is not None:
                    delay = max(delay, err.retry_after)  # at least what the server asked (<= max_retry_after_s)
                log.info("%s: %s: %s; retry %d in %.2f s", self.stage, request.key, err, attempt + 1, delay)
                with self._lock:
                    self.stats.retries += 1
                attempt += 1
                self._sleep(delay)
        reply = self._boundary(request, reply)
        with self._lock:
            self.stats.answered += 1
            self.stats.prompt_tokens += reply.prompt_tokens
            self.stats.completion_tokens += reply.completion_tokens
        if self.cache is not None:
            entry = {
                "key": request.key,
                "text": reply.text,
                "finish_reason": reply.finish_reason,
                "refusal": reply.refusal,
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
            }
            if reply.top_logprobs is not None:
                entry["top_logprobs"] = [list(pair) for pair in reply.top_logprobs]
            self.cache.put(digest, entry)
        return reply

    def _boundary(self, request: Request, reply: Reply) -> Reply:
        """The reply as valid Unicode (lone surrogates become U+FFFD) with every secret masked."""
        text, bad = clean_text(reply.text)
        refusal, bad_refusal = clean_text(reply.refusal)
        finish, bad_finish = clean_text(reply.finish_reason)
        top, bad_top = reply.top_logprobs, 0
        if top is not None:
            cleaned = [(clean_text(token), logprob) for token, logprob in top]
            top = tuple((token, logprob) for (token, _), logprob in cleaned)
            bad_top = sum(count for (_, count), _ in cleaned)
        if bad + bad_refusal + bad_finish + bad_top:
            log.warning("%s: %s: the answer held %d lone surrogate(s) (not valid Unicode); replaced by U+FFFD",
                        self.stage, request.key, bad + bad_refusal + bad_finish + bad_top)
        return dataclasses.replace(reply, text=text, refusal=refusal, finish_reason=finish, top_logprobs=top)

    def _remember_failure(self, digest: str, request: Request, reason: str, cause: str) -> None:
        # A permanent failure (a 4xx) is recorded so that a rerun replays the same outcome without
        # a request (identical outputs); llm.retry_failed asks again instead. Outages are never recorded.
        if self.cache is not None and self.settings.provider != "file":
            self.cache.put(digest, {"key": request.key, "error": reason, "cause": cause, "kind": "permanent"})

    def close(self) -> None:
        """Release the provider: its connections, and the local server it started (provider
        world). Idempotent. `with LLMClient(...) as client:` closes at the end of the block."""
        close = getattr(self.provider, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log_summary(self) -> None:
        s = self.stats
        log.info(
            "%s: LLM %s at %s: %d requests sent (%d retries), %d answers, %d from cache; "
            "tokens: %d prompt + %d completion",
            self.stage, self.settings.model, getattr(self.provider, "endpoint", "?"),
            s.requests_sent, s.retries, s.answered, s.cache_hits, s.prompt_tokens, s.completion_tokens,
        )
