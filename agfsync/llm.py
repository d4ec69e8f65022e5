"""LLM access for the prompt and QA stages (rules prompts_generate, qa_generate).

It talks, through agfsync.llm_providers (the only module that touches the `openai`
package), to any OpenAI-compatible chat endpoint (OpenAI, Gemini's OpenAI-compatible endpoint, vLLM, Ollama) and adds
what a 45k-prompt run needs:

- an on-disk response cache keyed by the full request (provider, endpoint, model,
  messages, parameters): a rerun sends no request for what was answered and gives
  identical outputs, and a killed run loses nothing already answered (one fsynced JSONL
  line per answer, appended with agfsync.io.append_jsonl: a torn last line left by a
  crash is cut, never swallows the next answer, never fails a resume);
- retries with exponential backoff and jitter on 429, 5xx, timeouts and connection
  errors; a Retry-After is honoured in full up to llm.max_retry_after_s (beyond it the
  item fails, saying so); a per-run budget of HTTP requests, a concurrency limit;
- `timeout_s` bounds each HTTP request as a whole (connect, headers and the full body),
  not only each read: a server that drips its answer is given up at timeout_s;
- one decoding boundary: a body is decoded once, as strict UTF-8 JSON, and an answer's
  text is sanitised there (lone surrogates, which no UTF-8 file can hold, become U+FFFD);
  an undecodable body is a named item failure, never a crash or a poisoned cache entry;
- failure classes: outage-type failures (5xx, 408, 429, timeouts, connection errors,
  undecodable or non-chat bodies, once their retries are exhausted) are never cached,
  so a rerun asks again; permanent ones (other 4xx) are cached and replayed (ask again
  with llm.retry_failed). `check_yield` fails a stage that produced nothing, or less
  than llm.min_yield of what it asked for, naming the causes;
- token accounting, logged per stage;
- `ask_json`: send a request, parse the answer, and on bad output (not JSON, wrong
  fields, empty, truncated, HTML, a refusal) re-ask with the parse error up to a limit,
  then give up on that item with the reasons, never crashing the stage.

A `file` provider replays recorded answers (JSONL of {"key", "content"}) through the
same path, for the offline demo. API keys are read from the environment variable named
in config and held only in the openai client. Every key the config names is a secret
(`register_secrets`, `secret_values`): whatever leaves this layer (answer text given to
parsers, cache entries, exception messages, skip reasons, the stages' summaries and
records, log records of the LLM modules) passes `redact`, which masks it, so that an
endpoint echoing a key in an error body or an answer cannot put it in a file or a log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# The openai client and its HTTP stack log request details at DEBUG/INFO; keep them quiet
# so that nothing they might print (headers, bodies) reaches a rule log.
for _name in ("openai", "httpx", "httpx2", "httpcore", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# Secrets live in agfsync.secrets; re-exported here, where the LLM layer's callers look for them.
from agfsync.secrets import (  # noqa: E402,F401
    REDACTED, RedactFilter, redact, redact_obj, register_secrets, secret_values,
)


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


# ----------------------------------------------------------------------------- errors


class LLMError(RuntimeError):
    """A failure that stops the stage (bad key, budget exhausted, unusable endpoint, too little produced)."""


class AuthError(LLMError):
    pass


class BudgetExceeded(LLMError):
    pass


class YieldTooLow(LLMError):
    """The stage produced nothing, or less than llm.min_yield of what it asked for."""


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


class BadOutput(ValueError):
    """The model's answer cannot be used; the message is sent back in a repair request."""


# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class LLMSettings:
    provider: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    responses: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 2048
    send_seed: bool = True
    timeout_s: float = 60.0  # one HTTP request as a whole: connect, headers and the full body
    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0  # cap of our own backoff; a server's Retry-After is honoured beyond it
    max_retry_after_s: float = 300.0  # the longest Retry-After honoured; a longer one fails the item
    concurrency: int = 8
    max_requests: int = 100_000
    repair_attempts: int = 2
    retry_failed: bool = False
    min_yield: float = 0.5  # a stage producing less than this fraction of what it asked for fails

    @classmethod
    def from_config(cls, section: dict) -> LLMSettings:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in fields})


@dataclasses.dataclass(frozen=True)
class Request:
    key: str  # identity of the item, e.g. "qa/animals-1a2b3c4d5e"; names a recorded answer
    messages: tuple[dict, ...]
    seed: int | None = None


@dataclasses.dataclass(frozen=True)
class Reply:
    text: str | None
    finish_reason: str | None = None
    refusal: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


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

    One line per answer, appended with agfsync.io.append_jsonl (flushed and fsynced as it
    arrives): a crash loses at most the line being written; a torn last line is skipped
    on load and cut before the next append, both with a warning naming file and byte
    offset; a damaged line elsewhere (an older version appended after a torn line) is
    skipped with a warning naming file, line and offset: that answer is asked again."""

    def __init__(self, path: str | os.PathLike):
        from agfsync.io import read_jsonl

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
        from agfsync.io import append_jsonl

        entry = redact_obj({"hash": digest, **entry})
        with self._lock:
            append_jsonl(self.path, entry)
            self._entries[digest] = entry


def _short(text: str, limit: int = 120) -> str:
    """One line of at most `limit` characters, secrets masked BEFORE the cut (a key cut in
    two would no longer match its mask)."""
    text = " ".join(redact(str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
            from agfsync.llm_providers import FileProvider, OpenAIProvider

            provider = (FileProvider if settings.provider == "file" else OpenAIProvider)(settings, stage)
        self.provider = provider
        # Recorded answers are their own cache; a live endpoint's answers are cached on disk.
        self.cache = ResponseCache(cache_path) if cache_path and settings.provider != "file" else None
        self.stats = Stats()
        self._lock = threading.Lock()
        self._sleep = sleep
        self._jitter = random.Random()  # timing only; never affects outputs

    def _params(self, request: Request) -> dict:
        params = {
            "temperature": self.settings.temperature,
            "top_p": self.settings.top_p,
            "max_tokens": self.settings.max_tokens,
        }
        if self.settings.send_seed and request.seed is not None:
            params["seed"] = int(request.seed)
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
                                                 refusal=hit.get("refusal"), cached=True))
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
            self.cache.put(
                digest,
                {
                    "key": request.key,
                    "text": reply.text,
                    "finish_reason": reply.finish_reason,
                    "refusal": reply.refusal,
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                },
            )
        return reply

    def _boundary(self, request: Request, reply: Reply) -> Reply:
        """The reply as valid Unicode (lone surrogates become U+FFFD) with every secret masked."""
        text, bad = clean_text(reply.text)
        refusal, bad_refusal = clean_text(reply.refusal)
        finish, bad_finish = clean_text(reply.finish_reason)
        if bad + bad_refusal + bad_finish:
            log.warning("%s: %s: the answer held %d lone surrogate(s) (not valid Unicode); replaced by U+FFFD",
                        self.stage, request.key, bad + bad_refusal + bad_finish)
        return dataclasses.replace(reply, text=text, refusal=refusal, finish_reason=finish)

    def _remember_failure(self, digest: str, request: Request, reason: str, cause: str) -> None:
        # A permanent failure (a 4xx) is recorded so that a rerun replays the same outcome without
        # a request (identical outputs); llm.retry_failed asks again instead. Outages are never recorded.
        if self.cache is not None and self.settings.provider != "file":
            self.cache.put(digest, {"key": request.key, "error": reason, "cause": cause, "kind": "permanent"})

    def log_summary(self) -> None:
        s = self.stats
        log.info(
            "%s: LLM %s at %s: %d requests sent (%d retries), %d answers, %d from cache; "
            "tokens: %d prompt + %d completion",
            self.stage, self.settings.model, getattr(self.provider, "endpoint", "?"),
            s.requests_sent, s.retries, s.answered, s.cache_hits, s.prompt_tokens, s.completion_tokens,
        )


# ----------------------------------------------------------------------------- parsing helpers


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i cannot|as an ai|i am unable|i'm unable)", re.I)


def extract_json(reply: Reply) -> Any:
    """The JSON object in a model answer, or BadOutput saying why there is none."""
    if reply.refusal:
        raise BadOutput(f"refusal: {_short(reply.refusal)}")
    text = (reply.text or "").strip()
    if not text:
        raise BadOutput("empty response")
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    lowered = text[:200].lower()
    if lowered.startswith(("<!doctype", "<html", "<head", "<body")):
        raise BadOutput("an HTML page instead of JSON")
    if _REFUSAL.match(text):
        raise BadOutput(f"refusal: {_short(text, 80)}")
    start = text.find("{")
    if start < 0:
        try:
            kind = type(json.loads(text)).__name__
        except json.JSONDecodeError:
            raise BadOutput(f"not JSON: {_short(text, 60)!r}") from None
        raise BadOutput(f"expected a JSON object, got {kind}")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as err:
        if reply.finish_reason == "length":
            raise BadOutput("truncated JSON (the answer hit max_tokens)") from None
        raise BadOutput(f"invalid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(obj, dict):
        raise BadOutput(f"expected a JSON object, got {type(obj).__name__}")
    # The answer's JSON may itself hold "\ud800" escapes: the same boundary as the text.
    return _clean_json(obj)


def _clean_json(obj: Any) -> Any:
    if isinstance(obj, str):
        return clean_text(obj)[0]
    if isinstance(obj, dict):
        return {_clean_json(key): _clean_json(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_clean_json(value) for value in obj]
    return obj


REPAIR_TEMPLATE = (
    "Your previous answer could not be used: {reason}. "
    "Answer again with only the JSON object in the requested format, and nothing else."
)


@dataclasses.dataclass
class Outcome:
    """Result of one item: `value` when parsed, else `reasons` for the skip.

    For a failed item, `cause` is the short cause of its last failure and `outage` says
    whether it was an outage (not cached; a rerun asks again)."""

    key: str
    value: Any = None
    reasons: list[str] = dataclasses.field(default_factory=list)
    attempts: int = 0
    cause: str | None = None
    outage: bool = False

    @property
    def ok(self) -> bool:
        return self.value is not None


def _bad_output_cause(reason: str) -> str:
    """'refusal: I'm sorry...' -> 'refusal'; 'invalid JSON (Expecting ...)' -> 'invalid JSON'."""
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip() or reason


def ask_json(client: LLMClient, request: Request, parse: Callable[[Reply], T]) -> Outcome:
    """Ask, parse; on BadOutput re-ask with the reason (up to repair_attempts); never raises
    for a bad item. Stage-stopping errors (AuthError, BudgetExceeded) propagate."""
    outcome = Outcome(key=request.key)
    messages = list(request.messages)
    for attempt in range(client.settings.repair_attempts + 1):
        key = request.key if attempt == 0 else f"{request.key}#repair{attempt}"
        outcome.attempts = attempt + 1
        try:
            reply = client.complete(dataclasses.replace(request, key=key, messages=tuple(messages)))
        except ItemFailure as err:
            outcome.reasons.append(str(err))
            outcome.cause, outcome.outage = err.cause, err.outage
            return outcome
        try:
            outcome.value = parse(reply)
            return outcome
        except BadOutput as err:
            reason = redact(str(err))
            outcome.reasons.append(reason)
            outcome.cause, outcome.outage = _bad_output_cause(reason), False
            messages += [
                {"role": "assistant", "content": reply.text or ""},
                {"role": "user", "content": REPAIR_TEMPLATE.format(reason=reason)},
            ]
    return outcome


# ----------------------------------------------------------------------------- stage yield


def tally_failures(outcomes: Iterable[Outcome]) -> dict:
    """Counts of a stage's items: {"items", "failed", "outage": {cause: n}, "other": {cause: n}}."""
    items, outage, other = 0, Counter(), Counter()
    for outcome in outcomes:
        items += 1
        if not outcome.ok:
            (outage if outcome.outage else other)[outcome.cause or "unknown"] += 1
    return {"items": items, "failed": sum(outage.values()) + sum(other.values()),
            "outage": dict(outage.most_common()), "other": dict(other.most_common())}


def _causes(counts: dict, limit: int = 3) -> str:
    shown = [f"{cause} x {n}" for cause, n in list(counts.items())[:limit]]
    if len(counts) > limit:
        shown.append(f"{len(counts) - limit} more cause(s)")
    return ", ".join(shown)


def check_yield(stage: str, *, produced: int, asked: int, unit: str, tally: dict, requests: str,
                min_yield: float, section: str | None = None) -> None:
    """YieldTooLow when a stage produced nothing, or fewer than min_yield x asked `unit`s.

    The message names the shortfall, the config key (`section`.llm.min_yield, section
    defaulting to the stage), and the causes of the failed `requests` (tally_failures),
    outages apart (they are not cached: a rerun asks again)."""
    section = section or stage
    if produced > 0 and produced >= min_yield * asked:
        return
    if produced == 0:
        message = f"{stage}: produced nothing (0 of {asked} {unit})"
    else:
        message = (f"{stage}: produced {produced} of {asked} {unit} ({produced / asked:.0%}), below "
                   f"{section}.llm.min_yield = {min_yield:g}")
    failed, total = tally["failed"], tally["items"]
    if failed:
        message += f"; {failed} of {total} {requests} failed"
        outages, others = sum(tally["outage"].values()), sum(tally["other"].values())
        if outages and not others:
            message += f", every failure was an outage ({_causes(tally['outage'])})"
        elif outages:
            message += f": {outages} outage(s) ({_causes(tally['outage'])}), {others} other(s) ({_causes(tally['other'])})"
        else:
            message += f" ({_causes(tally['other'])})"
        if outages:
            message += "; outage failures are not cached: run the stage again when the endpoint is back"
        if others:
            message += f"; the other failures are listed in the log (set {section}.llm.retry_failed to ask again)"
    elif total == 0:
        message += f"; no {requests} were made"
    raise YieldTooLow(redact(message))


def run_concurrently(fn: Callable[[Any], T], items: Iterable[Any], concurrency: int, progress=None) -> Iterator[T]:
    """Apply fn to items with at most `concurrency` in flight; yield results in input order.
    The first exception stops the remaining work and propagates."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in futures:
                result = future.result()
                if progress is not None:
                    progress.update(1)
                yield result
        except BaseException:
            for future in futures:
                future.cancel()
            raise
