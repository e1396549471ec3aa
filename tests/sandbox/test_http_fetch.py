"""http_fetch against a real HTTP server on loopback: the allow-list holds on every hop."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tools import ExecutionStatus, ToolExecutor, ToolRegistry
from tools.builtin.http import register_http_tools

CONFIRMED = {"confirmed": True}
BIG = 3 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/ok":
            self._send(200, b"hello, agent")
        elif self.path == "/big":
            self._send(200, b"x" * BIG)
        elif self.path == "/hop":
            self._redirect("/ok")
        elif self.path == "/out":
            self._redirect(f"http://localhost:{port}/ok")
        elif self.path == "/loop":
            self._redirect("/loop")
        else:
            self._send(404, b"no such page")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("location", location)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join()


@pytest.fixture
def executor() -> ToolExecutor:
    registry = ToolRegistry()
    register_http_tools(registry, ["127.0.0.1"], max_bytes=1_000_000)
    return ToolExecutor(registry)


async def fetch(executor: ToolExecutor, url: str):
    return await executor.execute("http_fetch", {"url": url}, CONFIRMED)


def test_http_fetch_needs_confirmation_and_reaches_the_open_world():
    registry = ToolRegistry()
    register_http_tools(registry, [])
    tool = registry.get("http_fetch")
    assert tool is not None
    assert tool.requires_confirmation
    assert tool.open_world


async def test_an_allowed_host_is_fetched(executor: ToolExecutor, server: str):
    result = await fetch(executor, f"{server}/ok")
    assert result.status == ExecutionStatus.SUCCESS, result.error
    assert result.result["status"] == 200
    assert result.result["body"] == "hello, agent"
    assert not result.result["truncated"]


async def test_a_redirect_within_allowed_hosts_is_followed(executor: ToolExecutor, server: str):
    result = await fetch(executor, f"{server}/hop")
    assert result.result["url"] == f"{server}/ok"
    assert result.result["body"] == "hello, agent"


async def test_a_redirect_to_another_host_is_refused(executor: ToolExecutor, server: str):
    result = await fetch(executor, f"{server}/out")
    assert result.status == ExecutionStatus.PERMISSION_DENIED
    assert "'localhost' is not an allowed host" in result.error


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:{port}/ok",
        "http://[::1]:{port}/ok",
        "http://169.254.169.254/",
        "file:///etc/passwd",
    ],
)
async def test_hosts_and_ip_literals_not_listed_are_refused(
    executor: ToolExecutor, server: str, url: str
):
    result = await fetch(executor, url.format(port=server.rsplit(":", 1)[1]))
    assert result.status == ExecutionStatus.PERMISSION_DENIED, result


async def test_endless_redirects_stop(executor: ToolExecutor, server: str):
    result = await fetch(executor, f"{server}/loop")
    assert result.status == ExecutionStatus.PERMISSION_DENIED
    assert "redirects" in result.error


async def test_a_large_response_is_cut_at_the_cap(executor: ToolExecutor, server: str):
    result = await fetch(executor, f"{server}/big")
    assert result.result["truncated"]
    assert len(result.result["body"]) == 1_000_000
