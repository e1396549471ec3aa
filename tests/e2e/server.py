"""The real product in a child process, for the browser tests, the screenshots and the
live benchmark.

`serving()` runs `manage.py serve` (Daphne, the step worker inside it, the in-memory
channel layer: the embedded default) on a free loopback port, on a database the caller
has already migrated, and stops it on exit. The caller's Django settings are passed on
where the two processes must agree: the secret key, so that sessions the caller
creates for its users are valid in the server.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.test import Client

from tests.conftest import PROVIDER_ENVIRONMENT

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

START_SECONDS = 60
# Nothing from the caller's environment that would make the server other than the
# embedded default, reach a real LLM API, or lift Django's async-safety checks.
_NOT_PASSED_ON = ("REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE", *PROVIDER_ENVIRONMENT)


@dataclass(frozen=True)
class Server:
    port: int
    workspaces: Path  # each session's workspace is workspaces/<session id>
    log: Path  # the server's stdout and stderr

    @property
    def url(self) -> str:
        """The origin, http://127.0.0.1:<port>, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(
    *,
    var_dir: Path,
    database_url: str | None = None,
    port: int | None = None,
    environment: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """The server, answering, with its var dir (log, static files, workspaces) in
    `var_dir` and its database at `database_url` (default: SQLite in `var_dir`), on
    `port` (default: a free one), with `environment` added to what it is given."""
    with running(
        var_dir=var_dir, database_url=database_url, port=port, environment=environment
    ) as process:
        yield process.server


@contextmanager
def running(
    *,
    var_dir: Path,
    database_url: str | None = None,
    port: int | None = None,
    environment: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """As `serving()`, but the process itself, for tests that kill and restart it."""
    process = ServerProcess(
        var_dir=var_dir, database_url=database_url, port=port, environment=environment
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()


class ServerProcess:
    """`manage.py serve` in a child process, started again on the same port as often as
    a test likes; its log accumulates across restarts."""

    def __init__(
        self,
        *,
        var_dir: Path,
        database_url: str | None = None,
        port: int | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.server = Server(
            port=port or free_port(), workspaces=var_dir / "workspaces", log=var_dir / "server.log"
        )
        env = os.environ | {
            "AGENTDASH_VAR_DIR": str(var_dir),
            "AGENTDASH_WORKSPACES_DIR": str(self.server.workspaces),
            "AGENTDASH_INPROCESS_WORKER": "1",
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("DATABASE_URL", None)
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        for name in _NOT_PASSED_ON:
            env.pop(name, None)
        self.env = env | dict(environment or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.server.log.write_bytes(b"")

    def start(self) -> None:
        """Start it and wait until it answers."""
        port = str(self.server.port)
        command = [sys.executable, "manage.py", "serve", "--port", port, "--no-migrate"]
        with self.server.log.open("ab") as output:
            self.process = subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        _wait_until_answering(self.process, self.server)

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind, as a crash or the OOM killer would end it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def _wait_until_answering(process: subprocess.Popen[bytes], server: Server) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {process.returncode}:\n{server.log.read_text()}"
            )
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
        try:
            connection.request("GET", "/login/")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    log = server.log.read_text()
    raise RuntimeError(f"the server did not answer within {START_SECONDS} s:\n{log}")


def session_cookie(user: AbstractBaseUser) -> tuple[str, str]:
    """(name, value) of a cookie that logs `user` in, as the login form would."""
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return name, client.cookies[name].value
