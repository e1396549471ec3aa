"""A small fake Docker Engine API on a unix socket, speaking the endpoints the Docker
SDK calls for one sandbox run, and recording what it was sent.

The test then asserts the exact container configuration (the create payload) without
an engine. Output is sent in the engine's multiplexed stream format.
"""

from __future__ import annotations

import json
import socketserver
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONTAINER_ID = "f" * 64


@dataclass
class Script:
    """What the fake container does."""

    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    oom_killed: bool = False
    runs_for: float = 0.0  # seconds the wait call takes to answer
    creates_for: float = 0.0  # seconds the create call takes (pulling an image, say)


@dataclass
class FakeDockerEngine:
    socket_path: Path
    script: Script = field(default_factory=Script)
    created: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # "METHOD /path" without the version

    def __post_init__(self) -> None:
        self._server = _UnixHTTPServer(str(self.socket_path), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket_path}"

    def __enter__(self) -> FakeDockerEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up waiting (as the timeout test makes it) is no fault here.
        if not isinstance(sys.exception(), (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def _handler_for(engine: FakeDockerEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _route(self) -> tuple[str, dict[str, list[str]]]:
            url = urlsplit(self.path)
            path = "/" + url.path.lstrip("/").split("/", 1)[1]  # drop "/v1.45"
            engine.calls.append(f"{self.command} {path}")
            return path, parse_qs(url.query)

        def _send(
            self, status: int, body: bytes = b"", content_type: str = "application/json"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: object) -> None:
            self._send(status, json.dumps(payload).encode())

        def do_GET(self) -> None:
            path, query = self._route()
            if path == "/_ping":
                self._send(200, b"OK", "text/plain")
            elif path.endswith("/logs"):
                wanted = [
                    _frame(number, data)
                    for number, key, data in (
                        (1, "stdout", engine.script.stdout),
                        (2, "stderr", engine.script.stderr),
                    )
                    if query.get(key) == ["1"] and data
                ]
                self._send(200, b"".join(wanted), "application/vnd.docker.multiplexed-stream")
            elif path.endswith("/json"):
                state = {
                    "Status": "exited",
                    "ExitCode": engine.script.exit_code,
                    "OOMKilled": engine.script.oom_killed,
                }
                self._json(200, {"Id": CONTAINER_ID, "State": state, "Config": {"Tty": False}})
            else:
                self._json(404, {"message": f"no route {path}"})

        def do_POST(self) -> None:
            path, _ = self._route()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if path == "/containers/create":
                time.sleep(engine.script.creates_for)
                engine.created.append(json.loads(body))
                self._json(201, {"Id": CONTAINER_ID, "Warnings": []})
            elif path.endswith("/wait"):
                time.sleep(engine.script.runs_for)
                self._json(200, {"StatusCode": engine.script.exit_code, "Error": None})
            elif path.endswith(("/start", "/kill")):
                self._send(204)
            else:
                self._json(404, {"message": f"no route {path}"})

        def do_DELETE(self) -> None:
            self._route()
            self._send(204)

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

    return Handler
