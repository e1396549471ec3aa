"""A webhook receiver on 127.0.0.1 that checks every request as a real one would.

It verifies the signature itself, straight from the documented scheme (HMAC-SHA256 of
timestamp + "." + raw body), not through agentdash's own code, so that a mistake in
the signing cannot hide behind the same mistake in the checking. Tests queue its
answers: a status, and optionally a body, a delay that outlasts the sender's timeout,
or a head dripped out a line at a time, each line well within it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # names in lower case
    body: bytes
    signature_valid: bool

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


# How often a dripping answer sends one more header line.
DRIP_INTERVAL = 0.2


@dataclass(frozen=True)
class Answer:
    status: int = 204
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    drip: float = 0.0  # seconds spent sending header lines, one every DRIP_INTERVAL


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[Received] = []
        self._answers: deque[Answer] = deque()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hooks/agentdash"

    def answer(self, *answers: Answer) -> None:
        """Answer the next requests so, in order; then 204."""
        self._answers.extend(answers)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _signature_valid(self, headers: dict[str, str], body: bytes) -> bool:
        timestamp = headers.get("x-agentdash-timestamp", "")
        signed = timestamp.encode() + b"." + body
        expected = "sha256=" + hmac.new(self.secret.encode(), signed, hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
        return fresh and hmac.compare_digest(expected, headers.get("x-agentdash-signature", ""))

    def _take(self, headers: dict[str, str], body: bytes) -> Answer:
        self.received.append(Received(headers, body, self._signature_valid(headers, body)))
        return self._answers.popleft() if self._answers else Answer()


def _handler_for(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = receiver._take(headers, body)
            time.sleep(answer.delay)
            try:
                self.send_response(answer.status)
                self._drip(answer.drip)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answer.body)
            except ConnectionError:
                pass  # the sender gave up waiting: the timeout tests
            self.close_connection = True

        def _drip(self, seconds: float) -> None:
            end = time.monotonic() + seconds
            line = 0
            while time.monotonic() < end:
                line += 1
                self.send_header("X-Drip", str(line))
                self.flush_headers()
                time.sleep(DRIP_INTERVAL)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
