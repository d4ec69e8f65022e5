"""LLM access for the prompt and QA stages (rules prompts_generate, qa_generate).

The only module that touches the `openai` package. It talks to any OpenAI-compatible
chat endpoint (OpenAI, Gemini's OpenAI-compatible endpoint, vLLM, Ollama) and adds
what a 45k-prompt run needs:

- an on-disk response cache keyed by the full request (provider, endpoint, model,
  messages, parameters): a rerun sends no request and gives identical outputs, and a
  killed run loses nothing already answered (one fsynced JSONL line per answer);
- retries with exponential backoff and jitter on 429, 5xx, timeouts and connection
  errors (Retry-After honoured), a per-run budget of HTTP requests, a concurrency limit;
- token accounting, logged per stage;
- `ask_json`: send a request, parse the answer, and on bad output (not JSON, wrong
  fields, empty, truncated, HTML, a refusal) re-ask with the parse error up to a limit,
  then give up on that item with the reasons, never crashing the stage.

A `file` provider replays recorded answers (JSONL of {"key", "content"}) through the
same path, for the offline demo. API keys are read from the environment variable named
in config, held only in the openai client, and never logged, cached or written.
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


# ----------------------------------------------------------------------------- errors


class LLMError(RuntimeError):
    """A failure that stops the stage (bad key, budget exhausted, unusable endpoint)."""


class AuthError(LLMError):
    pass


class BudgetExceeded(LLMError):
    pass


class ItemFailure(Exception):
    """One request could not be answered (retries exhausted, 4xx, missing recording).
    The item is skipped with this reason; the stage goes on."""


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
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    concurrency: int = 8
    max_requests: int = 100_000
    repair_attempts: int = 2
    retry_failed: bool = False

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

    One line per answer, flushed and fsynced as it arrives: a crash loses at most the
    line being written, and a torn last line is ignored on load.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        if self.path.exists():
            with self.path.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                        self._entries[entry["hash"]] = entry
                    except (json.JSONDecodeError, KeyError, TypeError):
                        log.warning("%s: ignoring a torn or invalid cache line", self.path)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> dict | None:
        return self._entries.get(digest)

    def put(self, digest: str, entry: dict) -> None:
        entry = {"hash": digest, **entry}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            self._entries[digest] = entry


# ----------------------------------------------------------------------------- providers


class OpenAIProvider:
    """Any OpenAI-compatible /chat/completions endpoint, through the openai package."""

    def __init__(self, settings: LLMSettings, stage: str):
        import openai  # confined here: the rest of agfsync never imports it

        self._openai = openai
        self.settings = settings
        if settings.api_key_env:
            api_key = os.environ.get(settings.api_key_env, "")
            if not api_key.strip():
                raise AuthError(
                    f"{stage}: environment variable {settings.api_key_env} is not set; it must hold the API key "
                    f"for model {settings.model!r} at {self.endpoint} (set it, or change {stage}.llm.api_key_env)"
                )
        else:
            api_key = "not-needed"  # keyless local servers (vLLM, Ollama)
        self._stage = stage
        self._client = openai.OpenAI(
            api_key=api_key, base_url=settings.base_url, timeout=settings.timeout_s, max_retries=0
        )

    @property
    def endpoint(self) -> str:
        return self.settings.base_url or "https://api.openai.com/v1"

    def send(self, request: Request, params: dict) -> Reply:
        openai = self._openai
        try:
            completion = self._client.chat.completions.create(
                model=self.settings.model, messages=list(request.messages), **params
            )
        except openai.AuthenticationError as err:
            # The error body may echo part of the key: report the status only.
            raise AuthError(
                f"{self._stage}: {self.endpoint} rejected the API key in ${self.settings.api_key_env} "
                f"(HTTP {err.status_code}); set {self.settings.api_key_env} to a valid key"
            ) from None
        except openai.PermissionDeniedError as err:
            raise AuthError(
                f"{self._stage}: {self.endpoint} denied access to model {self.settings.model!r} with the key in "
                f"${self.settings.api_key_env} (HTTP {err.status_code})"
            ) from None
        except openai.RateLimitError as err:
            raise _Transient("HTTP 429 rate limited", _retry_after(err)) from None
        except openai.APITimeoutError:
            raise _Transient(f"timeout after {self.settings.timeout_s:g} s") from None
        except openai.APIConnectionError as err:
            raise _Transient(f"connection error ({type(err.__cause__ or err).__name__})") from None
        except openai.APIStatusError as err:
            if err.status_code >= 500 or err.status_code == 408:
                raise _Transient(f"HTTP {err.status_code} server error", _retry_after(err)) from None
            raise ItemFailure(f"HTTP {err.status_code} {_short(err.message)}") from None
        except openai.APIResponseValidationError:
            raise _Transient("endpoint returned an unparseable response (not chat-completion JSON)") from None
        except openai.APIError as err:
            raise _Transient(f"endpoint error: {_short(str(err))}") from None
        if isinstance(completion, str) or not getattr(completion, "choices", None):
            # An HTML error page or an empty body with a 200 status.
            raise _Transient("endpoint returned no choices (HTML page or empty body?)")
        choice = completion.choices[0]
        message = choice.message
        usage = getattr(completion, "usage", None)
        return Reply(
            text=getattr(message, "content", None),
            finish_reason=getattr(choice, "finish_reason", None),
            refusal=getattr(message, "refusal", None),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )


class FileProvider:
    """Replays recorded answers: JSONL lines {"key": ..., "content": ..., "finish_reason"?: ...}."""

    def __init__(self, settings: LLMSettings, stage: str):
        from agfsync.io import read_jsonl

        self.path = Path(settings.responses)
        self._answers = {}
        for record in read_jsonl(self.path, required=("key", "content")):
            self._answers[record["key"]] = record

    endpoint = "file"

    def send(self, request: Request, params: dict) -> Reply:
        record = self._answers.get(request.key)
        if record is None:
            raise ItemFailure(f"no recorded response for {request.key!r} in {self.path}")
        return Reply(text=record["content"], finish_reason=record.get("finish_reason", "stop"))


def _retry_after(err) -> float | None:
    try:
        value = err.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- client


class LLMClient:
    """Cache, retries, budget and accounting around one provider. Thread-safe."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        stage: str,
        cache_path: str | os.PathLike | None,
        provider: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.stage = stage
        if provider is None:
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
        digest = self.request_hash(request)
        hit = self.cache.get(digest) if self.cache is not None else None
        if hit is not None and "error" in hit and self.settings.retry_failed:
            hit = None  # ask again what failed in an earlier run
        if hit is not None:
            with self._lock:
                self.stats.cache_hits += 1
            if "error" in hit:
                raise ItemFailure(f"{hit['error']} (in an earlier run; set llm.retry_failed to ask again)")
            return Reply(text=hit["text"], finish_reason=hit.get("finish_reason"), refusal=hit.get("refusal"), cached=True)
        params = self._params(request)
        attempt = 0
        while True:
            self._take_budget()
            try:
                reply = self.provider.send(request, params)
                break
            except ItemFailure as err:
                self._remember_failure(digest, request, str(err))
                raise
            except _Transient as err:
                if attempt >= self.settings.max_retries:
                    reason = f"{err} (gave up after {attempt + 1} attempts)"
                    self._remember_failure(digest, request, reason)
                    raise ItemFailure(reason) from None
                delay = min(self.settings.max_backoff_s, self.settings.backoff_s * 2**attempt)
                delay *= 0.5 + self._jitter.random()  # decorrelate concurrent retries
                if err.retry_after is not None:
                    delay = max(delay, min(err.retry_after, self.settings.max_backoff_s))
                log.info("%s: %s: %s; retry %d in %.2f s", self.stage, request.key, err, attempt + 1, delay)
                with self._lock:
                    self.stats.retries += 1
                attempt += 1
                self._sleep(delay)
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

    def _remember_failure(self, digest: str, request: Request, reason: str) -> None:
        # Recorded so that a rerun replays the same outcome without a request (identical
        # outputs); llm.retry_failed asks again instead.
        if self.cache is not None and not isinstance(self.provider, FileProvider):
            self.cache.put(digest, {"key": request.key, "error": reason})

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
    return obj


REPAIR_TEMPLATE = (
    "Your previous answer could not be used: {reason}. "
    "Answer again with only the JSON object in the requested format, and nothing else."
)


@dataclasses.dataclass
class Outcome:
    """Result of one item: `value` when parsed, else `reasons` for the skip."""

    key: str
    value: Any = None
    reasons: list[str] = dataclasses.field(default_factory=list)
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.value is not None


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
            return outcome
        try:
            outcome.value = parse(reply)
            return outcome
        except BadOutput as err:
            outcome.reasons.append(str(err))
            messages += [
                {"role": "assistant", "content": reply.text or ""},
                {"role": "user", "content": REPAIR_TEMPLATE.format(reason=err)},
            ]
    return outcome


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
