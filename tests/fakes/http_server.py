"""A scriptable HTTP server on 127.0.0.1 that records what it is sent.

The fake LLM APIs build on it: a test queues the responses (status, headers, body,
an optional delay), the client under test talks real HTTP to it, and the test then
reads back every request (headers included) to assert what was sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

# A held response that nobody releases is answered after this long, so that a failing
# test's server threads end.
HOLD_LIMIT_SECONDS = 60.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # the parsed JSON body

    @property
    def retry_count(self) -> int:
        """Which attempt this was, as the Anthropic and OpenAI SDKs number them."""
        return int(self.headers.get("x-stainless-retry-count", "0"))


@dataclass(frozen=True)
class FakeResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering, to provoke client timeouts
    # Held until the test sets it (or HOLD_LIMIT_SECONDS pass): the request is in, the
    # answer is not, so a test can kill or cut the client in the middle of a call.
    hold: threading.Event | None = None

    @classmethod
    def json(cls, status: int, payload: object, headers: dict[str, str] | None = None) -> Self:
        return cls(status=status, body=json.dumps(payload).encode(), headers=headers or {})


class FakeHTTPServer:
    """Answers POSTs to `path` with the queued responses, in order."""

    path = "/"

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._responses: deque[FakeResponse] = deque()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        # A short poll interval: shutdown() waits for the serving loop to notice it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def enqueue(self, *responses: FakeResponse) -> None:
        self._responses.extend(responses)

    @property
    def pending(self) -> int:
        """Responses queued but not yet served."""
        return len(self._responses)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _respond(self, request: RecordedRequest) -> FakeResponse:
        self.requests.append(request)
        if request.path.split("?")[0] != self.path:
            return FakeResponse.json(404, {"error": f"the fake serves POST {self.path} only"})
        if not self._responses:
            # 418 is neither retried by the SDKs nor plausible from a real API: a test
            # that sees it made more calls than it queued answers for.
            return FakeResponse.json(
                418, {"error": f"no response queued for request {len(self.requests)}"}
            )
        return self._responses.popleft()


def _handler_for(fake: FakeHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            request = RecordedRequest(
                method="POST",
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=json.loads(raw) if raw else None,
            )
            response = fake._respond(request)
            time.sleep(response.delay)
            if response.hold is not None:
                response.hold.wait(HOLD_LIMIT_SECONDS)
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                self.send_header("Connection", "close")
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)
            except ConnectionError:
                pass  # the client gave up waiting (a timeout test): nothing to answer
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler
