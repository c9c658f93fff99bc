"""A scripted OpenAI-compatible chat server for tests.

    def handler(request_json: dict, call_index: int) -> Reply:
        return completion(f"answer {call_index}")

    with ChatServer(handler) as server:
        client = ChatClient(server.url, "test-model")
        ...
        server.requests[0].json["messages"]   # what the client sent
        server.max_in_flight                   # peak concurrent requests

The server listens on 127.0.0.1 (a free port), answers ``POST /v1/chat/completions``
in background threads and stops cleanly on exit, waking any reply still
sleeping through its ``delay_s``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request.

    Attributes:
        status: the HTTP status code.
        json: a JSON body (serialised for you); ignored when ``body`` is given.
        body: raw body bytes, e.g. to send malformed JSON.
        delay_s: seconds to wait before answering (to provoke client timeouts).
        headers: extra response headers, e.g. ``{"Retry-After": "0"}``.
    """

    status: int = 200
    json: Any = None
    body: Optional[bytes] = None
    delay_s: float = 0.0
    headers: Optional[dict[str, str]] = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received.

    Attributes:
        path: the request path, e.g. ``/v1/chat/completions``.
        headers: the request headers (names lower-cased).
        json: the parsed JSON body, or ``None`` when it was not JSON.
        received_at: ``time.monotonic()`` when it arrived.
    """

    path: str
    headers: dict[str, str]
    json: Any
    received_at: float


Handler = Callable[[dict, int], Reply]


def completion(text: str, model: str = "test-model", finish_reason: str = "stop") -> Reply:
    """A normal 200 chat-completion reply whose answer is ``text``.

    Args:
        text: the assistant message content.
        model: the model name to report.
        finish_reason: the choice's finish reason.

    Returns:
        The reply to return from a handler.
    """
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 1, "completion_tokens": len(text.split()), "total_tokens": 1},
    }
    return Reply(json=body)


def error(status: int, message: str = "error", headers: Optional[dict[str, str]] = None) -> Reply:
    """An OpenAI-style error reply.

    Args:
        status: the HTTP status code.
        message: the error message in the body.
        headers: extra response headers.

    Returns:
        The reply to return from a handler.
    """
    return Reply(status=status, json={"error": {"message": message, "code": status}}, headers=headers)


def sequence(*replies: Reply) -> Handler:
    """A handler answering the i-th request with ``replies[i]`` (the last one repeats).

    Args:
        replies: the replies in order.

    Returns:
        The handler.
    """
    if not replies:
        raise ValueError("sequence(): give at least one reply")
    return lambda request_json, call_index: replies[min(call_index, len(replies) - 1)]


@dataclass
class _State:
    handler: Handler
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[RecordedRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    handler_errors: list[str] = field(default_factory=list)


class _RequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no thread lingers on an idle keep-alive socket at shutdown.
    protocol_version = "HTTP/1.0"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        """Record the request, ask the test's handler for the reply, send it (after its delay)."""
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        recorded = RecordedRequest(self.path, headers, _parse(raw), time.monotonic())
        with state.lock:
            index = len(state.requests)
            state.requests.append(recorded)
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        # A request leaves "in flight" before its answer is written: once the client has the answer it may
        # send the next one, and counting until after the write would see both at once.
        try:
            reply = self._reply_for(state, recorded.json, index)
            stopped = reply.delay_s > 0 and state.stopping.wait(reply.delay_s)
        finally:
            with state.lock:
                state.in_flight -= 1
        if stopped:
            return
        try:
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired): nothing to answer

    def _reply_for(self, state: _State, request_json: Any, index: int) -> Reply:
        if self.path != CHAT_PATH:
            return error(404, f"no route {self.path}")
        try:
            return state.handler(request_json, index)
        except Exception as exc:  # a broken test handler must show up, not hang the client
            with state.lock:
                state.handler_errors.append(f"{type(exc).__name__}: {exc}")
            return error(500, f"handler raised {type(exc).__name__}: {exc}")

    def _send(self, reply: Reply) -> None:
        if reply.body is not None:
            body = reply.body
        else:
            body = b"" if reply.json is None else json.dumps(reply.json).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (reply.headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True
    request_queue_size = 128  # the default backlog of 5 drops bursts of concurrent connects (1 s SYN retry)

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _RequestHandler)
        self.state = state


class ChatServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1, answering through ``handler``.

    Attributes:
        url: the API root to give a client, ``http://127.0.0.1:PORT/v1``.
    """

    def __init__(self, handler: Handler) -> None:
        """Prepare the server; it starts listening on ``__enter__``.

        Args:
            handler: called as ``handler(request_json, call_index)`` for each
                request (``call_index`` counts from 0 in arrival order); returns a :class:`Reply`.
        """
        self._state = _State(handler)
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self.url = ""

    def __enter__(self) -> "ChatServer":
        self._server = _Server(self._state)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="chat-server", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._state.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def max_in_flight(self) -> int:
        """The largest number of requests being handled at the same moment."""
        with self._state.lock:
            return self._state.max_in_flight

    @property
    def handler_errors(self) -> list[str]:
        """Exceptions the handler raised (each answered with a 500)."""
        with self._state.lock:
            return list(self._state.handler_errors)
