"""A local OpenAI-compatible chat-completions server for tests (127.0.0.1, free port).

The test gives a `responder(body, seen) -> Action`, where `body` is the parsed request
JSON and `seen` counts earlier requests with the same messages (0 on the first), so a
script can fail first and succeed on retry. Every request is recorded (body and the
Authorization header) for assertions.

Fault modes of an Action: `raw_body` (any text, e.g. an HTML page), `raw_bytes` (bytes sent
verbatim, e.g. invalid UTF-8 in a 200 JSON answer), `drip_s` (the body is sent in
`drip_bytes`-byte pieces, `drip_s` apart: a slow server that never stalls long enough for a
per-read timeout), `delay_s` (before the headers). A lone surrogate in a content reaches the
client as the JSON escape "\ud800" (json.dumps escapes it), as a real endpoint would send it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclasses.dataclass
class Action:
    status: int = 200
    content: str | None = None  # chat message content (status 200, JSON completion)
    finish_reason: str = "stop"
    raw_body: str | None = None  # send this body verbatim instead of a completion
    raw_bytes: bytes | None = None  # send these bytes verbatim (invalid UTF-8, ...)
    content_type: str = "application/json"
    headers: dict = dataclasses.field(default_factory=dict)
    delay_s: float = 0.0
    drip_s: float = 0.0  # pause between pieces of the body
    drip_bytes: int = 1
    drip_headers: bool = False  # with drip_s: the status line and headers drip too, not only the body
    usage: tuple[int, int] = (11, 7)


def ok(content: str, **kw) -> Action:
    return Action(content=content, **kw)


def error(status: int, message: str = "error", **kw) -> Action:
    body = json.dumps({"error": {"message": message, "type": "test_error", "code": status}})
    return Action(status=status, raw_body=body, **kw)


def raw(data: bytes, status: int = 200, **kw) -> Action:
    return Action(status=status, raw_bytes=data, **kw)


def html_page(status: int = 200) -> Action:
    return Action(status=status, raw_body="<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
                  content_type="text/html")


def messages_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 (free port) for the duration of a `with` block."""

    def serve(self, handler) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def root_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeOpenAI(LocalServer):
    def __init__(self, responder):
        self.responder = responder
        self.requests: list[dict] = []
        self.auth_headers: list[str] = []
        self._seen: Counter = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    key = messages_hash(body)
                    seen = server._seen[key]
                    server._seen[key] += 1
                    server.requests.append(body)
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                action = server.responder(body, seen)
                if action.delay_s:
                    time.sleep(action.delay_s)
                if action.raw_bytes is not None:
                    payload = action.raw_bytes
                elif action.raw_body is not None:
                    payload = action.raw_body.encode()
                else:
                    payload = json.dumps({
                        "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                        "created": int(time.time()), "model": body.get("model", "fake"),
                        "choices": [{"index": 0, "finish_reason": action.finish_reason,
                                     "message": {"role": "assistant", "content": action.content}}],
                        "usage": {"prompt_tokens": action.usage[0], "completion_tokens": action.usage[1],
                                  "total_tokens": sum(action.usage)},
                    }).encode()
                if action.drip_s and action.drip_headers:
                    head = (f"HTTP/1.1 {action.status} Status\r\nContent-Type: {action.content_type}\r\n"
                            f"Content-Length: {len(payload)}\r\n"
                            + "".join(f"{name}: {value}\r\n" for name, value in action.headers.items()) + "\r\n")
                    self.close_connection = True
                    try:
                        data = head.encode() + payload
                        for start in range(0, len(data), action.drip_bytes):
                            self.wfile.write(data[start:start + action.drip_bytes])
                            self.wfile.flush()
                            time.sleep(action.drip_s)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                try:
                    self.send_response(action.status)
                    self.send_header("Content-Type", action.content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in action.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if action.drip_s:
                        for start in range(0, len(payload), action.drip_bytes):
                            self.wfile.write(payload[start:start + action.drip_bytes])
                            self.wfile.flush()
                            time.sleep(action.drip_s)
                    else:
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up

        self.serve(Handler)

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"
