"""The endpoints behind agfsync.llm.client.LLMClient: any OpenAI-compatible chat endpoint
(OpenAIProvider: one deadline per request, one decoding boundary), recorded answers
(FileProvider, the offline demo) and local servers that the stage starts and stops
(LocalServerProvider: provider `world`, the world writer, over HTTP through OpenAIProvider).
The only module that imports the `openai` package."""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import json
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agfsync.llm.base import (AuthError, ItemFailure, LLMError, LLMSettings, Reply, Request, _short, _Transient,
                               logprob_pairs)
from agfsync.core.secrets import register_secrets

log = logging.getLogger("agfsync.llm.client")


def _http_module():
    """The HTTP package under the openai client (httpx2 for openai >= 3, httpx before)."""
    try:
        import httpx2

        return httpx2
    except ImportError:  # pragma: no cover - older openai
        import httpx

        return httpx


class OpenAIProvider:
    """Any OpenAI-compatible /chat/completions endpoint, through the openai package.

    The body is streamed and read here, under a deadline of timeout_s from the start of
    the request (the client's own timeout bounds connect and each read only), then
    decoded once: strict UTF-8, JSON, a chat completion."""

    def __init__(self, settings: LLMSettings, stage: str, *, trust_env: bool = True):
        """trust_env=False: no proxy from the environment (a local server on 127.0.0.1)."""
        import openai  # confined here: the rest of agfsync never imports it

        self._openai = openai
        self._http = _http_module()
        self.settings = settings
        if settings.api_key_env:
            api_key = os.environ.get(settings.api_key_env, "")
            if not api_key.strip():
                raise AuthError(
                    f"{stage}: environment variable {settings.api_key_env} is not set; it must hold the API key "
                    f"for model {settings.model!r} at {self.endpoint} (set it, or change {stage}.llm.api_key_env)"
                )
            register_secrets([api_key])
        else:
            api_key = "not-needed"  # keyless local servers (vLLM, Ollama)
        self._stage = stage
        self._client = openai.OpenAI(
            api_key=api_key, base_url=settings.base_url, timeout=settings.timeout_s, max_retries=0,
            http_client=None if trust_env else openai.DefaultHttpxClient(trust_env=False),
        )

    def close(self) -> None:
        """Close the HTTP connections (idempotent)."""
        self._client.close()

    @property
    def endpoint(self) -> str:
        return self.settings.base_url or "https://api.openai.com/v1"

    def _timeout(self) -> _Transient:
        return _Transient(f"timeout after {self.settings.timeout_s:g} s")

    def send(self, request: Request, params: dict) -> Reply:
        """One HTTP request under one deadline of timeout_s for all of it: connect, status line
        and headers, the body, and error bodies (which the openai client reads itself). The
        request runs in a daemon thread; at the deadline the caller gets a timeout and the
        thread is abandoned (its response closed when there is one): the stage goes on, and
        the thread ends when the server or the per-read timeout ends the connection."""
        state: dict[str, Any] = {"bytes": 0}
        done = threading.Event()

        def attempt() -> None:
            try:
                state["reply"] = self._send_now(request, params, state)
            except BaseException as err:  # handed to the caller below
                state["error"] = err
            finally:
                done.set()

        threading.Thread(target=attempt, name=f"llm {request.key}", daemon=True).start()
        if not done.wait(self.settings.timeout_s):
            state["abandoned"] = True
            with contextlib.suppress(Exception):
                if state.get("response") is not None:
                    state["response"].close()
            where = (f"the answer was still arriving after {state['bytes']} bytes" if state["bytes"]
                     else "no answer yet")
            raise _Transient(f"timeout after {self.settings.timeout_s:g} s ({where}; timeout_s bounds the whole request)")
        if "error" in state:
            raise state["error"]
        return state["reply"]

    def _send_now(self, request: Request, params: dict, state: dict) -> Reply:
        openai, http = self._openai, self._http
        try:
            with self._client.chat.completions.with_streaming_response.create(
                model=self.settings.model, messages=list(request.messages), **params
            ) as response:
                state["response"] = response
                content_type = response.headers.get("content-type", "")
                body = bytearray()
                try:
                    for chunk in response.iter_bytes():
                        body += chunk
                        state["bytes"] = len(body)
                        if state.get("abandoned"):
                            raise _Transient("abandoned at the deadline")
                except http.TimeoutException:
                    raise self._timeout() from None
                except (http.HTTPError, OSError) as err:
                    raise _Transient(f"connection error while reading the answer ({type(err).__name__})") from None
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
            raise self._timeout() from None
        except openai.APIConnectionError as err:
            raise _Transient(f"connection error ({type(err.__cause__ or err).__name__})") from None
        except openai.APIStatusError as err:
            if err.status_code >= 500 or err.status_code == 408:
                raise _Transient(f"HTTP {err.status_code} server error", _retry_after(err)) from None
            message = re.sub(r"^Error code: \d+ - ", "", str(err.message))  # the openai client's prefix
            raise ItemFailure(f"HTTP {err.status_code} {_short(message)}", cause=f"HTTP {err.status_code}") from None
        except openai.APIError as err:
            raise _Transient(f"endpoint error: {_short(str(err))}") from None
        except http.TimeoutException:
            raise self._timeout() from None
        except (http.HTTPError, OSError, UnicodeDecodeError, ValueError) as err:
            # Whatever else the HTTP layer raises before the body (a malformed response line, bad
            # bytes in a header) is the endpoint's failure, not the stage's.
            raise _Transient(f"connection error ({type(err).__name__})") from None
        return _parse_completion(bytes(body), content_type)


def _parse_completion(body: bytes, content_type: str) -> Reply:
    """The one decoding boundary of an answer: strict UTF-8, JSON, a chat completion."""
    no_choices = "endpoint returned no choices (HTML page or empty body?)"
    try:
        text = body.decode("utf-8-sig")  # strict UTF-8; a leading byte-order mark is allowed
    except UnicodeDecodeError as err:
        raise _Transient(f"endpoint returned a body that is not valid UTF-8 (byte {err.start} of {len(body)}: "
                         f"{body[err.start:err.start + 4]!r})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        if "json" not in content_type.lower() or not text.strip() or text.lstrip().startswith("<"):
            raise _Transient(no_choices) from None  # an HTML error page or an empty body with a 200 status
        raise _Transient("endpoint returned an unparseable response (not chat-completion JSON)") from None
    if not isinstance(data, dict):
        raise _Transient("endpoint returned an unparseable response (not chat-completion JSON)")
    choices = data.get("choices")
    if not choices or not isinstance(choices, list):
        raise _Transient(no_choices)
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _Transient("endpoint returned an unparseable response (not chat-completion JSON)")
    content = message.get("content")
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        content = "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    elif content is not None and not isinstance(content, str):
        raise _Transient(f"endpoint returned a message content of type {type(content).__name__}, not text")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    refusal, finish = message.get("refusal"), choice.get("finish_reason")
    return Reply(
        text=content,
        finish_reason=finish if isinstance(finish, str) else None,
        refusal=refusal if isinstance(refusal, str) and refusal else None,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        top_logprobs=_first_top_logprobs(choice.get("logprobs")),
    )


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _first_top_logprobs(logprobs) -> tuple[tuple[str, float], ...] | None:
    """((token, logprob), ...) of the first generated token, from a choice's
    logprobs.content[0].top_logprobs; None when absent or not of that shape. Entries whose
    token is not text or whose logprob is not a finite number are left out (a logprob of
    -Infinity, probability 0, cannot be cached: it is not JSON)."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    first = content[0] if isinstance(content, list) and content else None
    top = first.get("top_logprobs") if isinstance(first, dict) else None
    if not isinstance(top, list):
        return None
    pairs = []
    for entry in top:
        if not isinstance(entry, dict):
            continue
        token, value = entry.get("token"), entry.get("logprob")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(token, str) and number and math.isfinite(value):
            pairs.append((token, float(value)))
    return tuple(pairs)


class FileProvider:
    """Replays recorded answers: JSONL lines {"key": ..., "content": ..., "finish_reason"?: ...,
    "top_logprobs"?: [[token, logprob], ...]}."""

    def __init__(self, settings: LLMSettings, stage: str):
        from agfsync.core.io import read_jsonl

        self.path = Path(settings.responses)
        self._answers = {}
        for record in read_jsonl(self.path, required=("key", "content")):
            self._answers[record["key"]] = record

    endpoint = "file"

    def send(self, request: Request, params: dict) -> Reply:
        record = self._answers.get(request.key)
        if record is None:
            raise ItemFailure(f"no recorded response for {request.key!r} in {self.path}", cause="no recorded response")
        return Reply(text=record["content"], finish_reason=record.get("finish_reason", "stop"),
                     top_logprobs=logprob_pairs(record.get("top_logprobs")))


# Local servers a provider name starts (name -> factory of an unstarted server with start(),
# stop(), base_url, endpoint). The layers keep this module from importing the world wing,
# so the world writer is registered from above: register_local_server("world", WorldWriter)
# (agfsync.world.writer.WorldWriter) where a stage's process starts (its workflow script, the CLI).
_LOCAL_SERVERS: dict[str, Callable[[], Any]] = {}


def register_local_server(name: str, factory: Callable[[], Any]) -> None:
    _LOCAL_SERVERS[name] = factory


class LocalServerProvider:
    """A local OpenAI-compatible server (provider `world`) that lives as long as this provider:
    started on a free 127.0.0.1 port when the provider is made, asked through OpenAIProvider
    (HTTP, the openai package, no API key, no proxy), stopped by close() (LLMClient.close, or
    the end of a `with LLMClient(...)` block), else when the provider is garbage collected or
    the process exits. `endpoint` is the server's own identity, not its URL: the port changes
    from run to run, the response cache key must not."""

    def __init__(self, settings: LLMSettings, stage: str, factory: Callable[[], Any]):
        self.server = factory()
        self.server.start()
        self._stop = weakref.finalize(self, self.server.stop)
        try:
            local = dataclasses.replace(settings, base_url=self.server.base_url, api_key_env=None)
            self._http = OpenAIProvider(local, stage, trust_env=False)
        except BaseException:
            self._stop()
            raise
        self.endpoint = getattr(self.server, "endpoint", settings.provider)

    def send(self, request: Request, params: dict) -> Reply:
        return self._http.send(request, params)

    def close(self) -> None:
        """Close the connections and stop the server (idempotent)."""
        try:
            self._http.close()
        finally:
            self._stop()


def make_provider(settings: LLMSettings, stage: str):
    """The provider of llm.provider: openai, file, or a registered local server (world)."""
    if settings.provider == "file":
        return FileProvider(settings, stage)
    if settings.provider in _LOCAL_SERVERS:
        return LocalServerProvider(settings, stage, _LOCAL_SERVERS[settings.provider])
    if settings.provider == "world":
        raise LLMError(f"{stage}: provider 'world' is not registered in this process: call "
                       "agfsync.llm.providers.register_local_server('world', agfsync.world.writer.WorldWriter) "
                       "before the stage runs (the workflow's scripts and the CLI do)")
    return OpenAIProvider(settings, stage)


def _retry_after(err) -> float | None:
    """Seconds asked by Retry-After (seconds or an HTTP date) or retry-after-ms, else None."""
    try:
        headers = err.response.headers
    except AttributeError:
        return None
    try:
        milliseconds = headers.get("retry-after-ms")
        if milliseconds is not None:
            return max(0.0, float(milliseconds) / 1000)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
