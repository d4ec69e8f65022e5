"""The world writer: a deterministic local OpenAI-compatible LLM for world runs.

`WorldWriter` serves POST /v1/chat/completions on 127.0.0.1 (port 0: a free one) with the
standard library's ThreadingHTTPServer, so that the LLM stages of a world run (provider
`world`) go through the same client code path as a real endpoint: HTTP through the openai
package, the response cache, retries, repair re-asks and the stages' parsers.

- A prompts-stage request (agfsync.stages.prompts.build_request: "Write N new descriptions
  of images in the category "world/<name>"") is answered with {"descriptions": [...]}: N
  distinct captions (agfsync.world.captions.caption) of descriptions sampled for that world
  category (agfsync.world.scenes.sample_description, split "seen": the held-out color-shape
  pairs stay out of every training text, so "unseen" remains a held-out test).
- A QA-stage request (agfsync.stages.qa.build_request: "Description: <prompt>") is answered
  with {"qa": [...]}: agfsync.world.questions.questions of the caption's Description
  (agfsync.world.captions.parse); in yes_no mode each multiple-choice record is rewritten as
  the yes/no question of its answer ("What color is the box?" red -> "Is the box red?").
- Anything else gets HTTP 400 (404 for another path) with an OpenAI-style JSON error body.

Deterministic: the answer is a function of the model name, the request's messages up to the
stage's own request (repair turns set aside) and its `seed` field, so the same request always
gets the same bytes and different requests (batches, prompts, seeds) differ.

Faults (fault_every = 25 by default, 0: none), a function of the same hash, so they never
change what a stage finally writes: 1 request in 25 is first answered with its JSON cut in
half (the stage's repair re-ask then gets the intended answer), and another 1 in 25 gets
HTTP 503 (Retry-After: 0) the first time this server sees it (the client's retry gets the
answer). Both cost one extra request each; the stages' yields are unchanged unless
llm.repair_attempts or llm.max_retries is 0 (then at most 4% of items fail).

Pure: the standard library and the world's pure modules; it imports nothing of agfsync.llm
(the layers: the provider that starts it, agfsync.llm.providers.LocalServerProvider, is
given this class by whoever registers provider `world`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agfsync.world import captions, questions, scenes
from agfsync.world.grammar import CATEGORIES

ENDPOINT = "world-writer/1"  # identity in the response cache (the port changes per run; this does not)
WORLD_PREFIX = "world/"
_PROMPTS = re.compile(r'Write (\d+) new descriptions of images in the category "([^"]*)"')
_DESCRIPTION = "Description: "
_REPAIR = "Your previous answer could not be used"
_YES_NO_RULE = "Every question must be a yes/no question"
MAX_DESCRIPTIONS = 100


class BadRequest(ValueError):
    """A request the writer cannot answer (HTTP 400, the message in the JSON error body)."""


def _core(messages: list[dict]) -> tuple[list[dict], bool]:
    """(the messages up to the stage's request, whether repair turns followed)."""
    core = list(messages)
    while len(core) >= 3 and core[-1].get("role") == "user" and str(core[-1].get("content")).startswith(_REPAIR):
        core = core[:-2]
    return core, len(core) < len(messages)


def _digest(body: dict, core: list[dict]) -> str:
    identity = [body.get("model"), core, body.get("seed")]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def write_descriptions(name: str, count: int, rng: random.Random, split: str = "seen") -> list[str]:
    """`count` distinct captions of the world category `name` ("world/<category>")."""
    if not name.startswith(WORLD_PREFIX) or name[len(WORLD_PREFIX):] not in CATEGORIES:
        raise BadRequest(f"the world writer writes only the world's categories "
                         f"({', '.join(WORLD_PREFIX + c for c in CATEGORIES)}); got {name!r}")
    if not 1 <= count <= MAX_DESCRIPTIONS:
        raise BadRequest(f"asked for {count} descriptions; the world writer writes 1 to {MAX_DESCRIPTIONS} per request")
    out: list[str] = []
    for _ in range(50 * count):
        text = captions.caption(scenes.sample_description(rng, name[len(WORLD_PREFIX):], split), rng)
        if text not in out:
            out.append(text)
        if len(out) == count:
            break
    return out


def _yes_no(record: dict) -> dict:
    """The record as a yes/no question whose answer is "yes" (unchanged when it is one)."""
    query = questions.parse(record)
    if query.yes_no:
        return record
    answer = record["answer"]
    if query.kind == "count":
        text = questions.ask_count(query.subject, int(answer))
    elif query.kind == "relation":
        text = questions.ask_relation(query.subject, query.other, answer)
    else:
        plural = re.match(r"(what \w+|where) are ", record["question"].lower()) is not None
        text = questions.ask_attribute(query.subject, query.attribute, answer, plural)
    return questions.record(text, ["yes", "no"], "yes", record["element"], record["element_type"])


def write_qa(prompt: str, rng: random.Random, yes_no: bool) -> list[dict]:
    """The TIFA-style records of a world caption, in the QA stage's field order."""
    try:
        description = captions.parse(prompt)
    except ValueError as err:
        raise BadRequest(str(err)) from None
    records = questions.questions(description, rng)
    if yes_no:
        records = [_yes_no(r) for r in records]
    out, seen = [], set()
    for r in records:
        if r["question"].lower() not in seen:
            seen.add(r["question"].lower())
            out.append({k: r[k] for k in ("element", "element_type", "question", "choices", "answer")})
    return out


def answer(body, *, split: str = "seen", fault_every: int = 25, first_arrival: bool = True) -> tuple[int, dict, dict]:
    """(HTTP status, JSON payload, extra headers) for a parsed request body. Pure."""
    try:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise BadRequest("'messages' must be a non-empty list of messages with text content")
        if body.get("stream"):
            raise BadRequest("the world writer does not stream ('stream': true)")
        core, repair = _core(messages)
        digest = _digest(body, core)
        rng = random.Random(int(digest[:16], 16))
        request = core[-1]["content"] if core[-1].get("role") == "user" else ""
        if (match := _PROMPTS.search(request)) is not None:
            content = json.dumps({"descriptions": write_descriptions(match.group(2), int(match.group(1)), rng, split)})
        elif request.startswith(_DESCRIPTION) and "question/answer pairs" in str(core[0].get("content")):
            yes_no = _YES_NO_RULE in str(core[0].get("content"))
            content = json.dumps({"qa": write_qa(request[len(_DESCRIPTION):].strip(), rng, yes_no)})
        else:
            raise BadRequest("not a request of the prompts or QA stage (agfsync.stages.prompts, agfsync.stages.qa)")
    except BadRequest as err:
        return 400, {"error": {"message": str(err), "type": "invalid_request_error", "code": 400}}, {}
    fault = int(digest, 16) % fault_every if fault_every > 0 else -1
    if fault == 1 and first_arrival:
        return 503, {"error": {"message": "the world writer is busy (a deterministic fault: retry)",
                               "type": "server_error", "code": 503}}, {"Retry-After": "0"}
    if fault == 0 and not repair:
        content = content[: len(content) // 2]  # cut JSON: the stage's parser asks for a repair
    words = sum(len(m["content"].split()) for m in messages)
    return 200, {
        "id": f"chatcmpl-world-{digest[:24]}", "object": "chat.completion", "created": 0, "model": body.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": words, "completion_tokens": len(content.split()),
                  "total_tokens": words + len(content.split())},
    }, {}


_local = threading.local()  # .server: set in a request thread (stop() from there must not join itself)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 30  # a client that stalls mid-request frees its thread

    def setup(self) -> None:
        _local.server = self.server
        super().setup()

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            return self._send(404, {"error": {"message": f"no route {self.path!r} (POST /v1/chat/completions)",
                                              "type": "invalid_request_error", "code": 404}})
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        self._send(*answer(body, split=self.server.writer.split, fault_every=self.server.writer.fault_every,
                           first_arrival=self.server.writer._first(raw)))

    def do_GET(self) -> None:  # noqa: N802
        self._send(404, {"error": {"message": f"no route GET {self.path!r} (POST /v1/chat/completions)",
                                   "type": "invalid_request_error", "code": 404}})

    def log_message(self, format, *args) -> None:  # noqa: A002 (quiet: the client logs what matters)
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close joins the request threads (HTTP/1.0: one request per connection)
    writer: WorldWriter


class WorldWriter:
    """The server. `with WorldWriter() as w:` or w.start() ... w.stop(); w.base_url is the
    /v1 root for an OpenAI client. stop() shuts the server down, closes its socket and joins
    its threads; it is idempotent."""

    endpoint = ENDPOINT

    def __init__(self, *, split: str = "seen", fault_every: int = 25, host: str = "127.0.0.1", port: int = 0):
        self.split, self.fault_every, self._address = split, fault_every, (host, port)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def _first(self, raw: bytes) -> bool:
        key = hashlib.sha256(raw).hexdigest()
        with self._lock:
            first = key not in self._seen
            self._seen.add(key)
        return first

    def start(self) -> WorldWriter:
        if self._httpd is None:
            self._httpd = _Server(self._address, _Handler)
            self._httpd.writer = self
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"world writer {self.base_url}", daemon=True)
            self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the world writer is not running (call start())")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self._address[0]}:{self.port}/v1"

    def stop(self) -> None:
        httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is None:
            return
        if threading.current_thread() is thread or getattr(_local, "server", None) is httpd:  # would wait for itself
            threading.Thread(target=self._close, args=(httpd, None), daemon=True).start()
        else:
            self._close(httpd, thread)

    @staticmethod
    def _close(httpd: _Server, thread: threading.Thread | None) -> None:
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> WorldWriter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
