"""Browser end-to-end fixtures: the real product, Debian's Chromium, logged-in operators.

The server is `manage.py serve` in a child process: Daphne, the step worker inside it
and the in-memory channel layer, exactly the embedded default that `make run` starts.
It opens pytest-django's file-backed SQLite test database, so a test creates users and
sessions with the ORM and the server (and its worker) sees them once committed: every
e2e test is transactional, and the database is emptied after each one.

Playwright's sync API keeps an asyncio loop running in the test's thread for as long as
the browser is open, and Django's ORM refuses to run in a thread with a running loop
(SynchronousOnlyOperation). Nothing else runs on that loop while a test reads or writes
the database: that is the case DJANGO_ALLOW_ASYNC_UNSAFE exists for, and it is set while
the browser is open only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.test import Client
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import PROVIDER_ENVIRONMENT

CHROMIUM = Path("/usr/bin/chromium")
# Root needs --no-sandbox; the rest keeps Chromium from reaching for the closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}
# Every wait is bounded: a live update takes milliseconds, a step well under a second.
TIMEOUT_MS = 10_000
SERVER_START_SECONDS = 60
# How long a test's leftover work may take to finish before the database is emptied.
SETTLE_SECONDS = 15

_reports = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Kept on the test item so that fixtures can tell, at teardown, whether it failed.
    report = yield
    item.stash.setdefault(_reports, {})[report.when] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_reports, {})
    return any(report.failed for report in reports.values())


@dataclass(frozen=True)
class Server:
    """The product under test, running in a child process."""

    url: str  # http://127.0.0.1:<port>, no trailing slash
    workspaces: Path  # where its sessions' workspaces are
    log: Path  # its stdout and stderr

    def ws_url(self, path: str) -> str:
        return "ws" + self.url.removeprefix("http") + path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/login/", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"the server did not answer within {SERVER_START_SECONDS} s:\n{log.read_text()}")


@pytest.fixture(scope="package")
def server(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`manage.py serve` on a free port, on the test database, for the e2e tests only
    (package scope: its worker must not contend for SQLite's lock with other tests)."""
    with django_db_blocker.unblock():
        assert connection.vendor == "sqlite", "the browser tests run on SQLite only"
        database = connection.settings_dict["NAME"]
    var = tmp_path_factory.mktemp("server-var")
    log = var / "server.log"
    port = _free_port()
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{database}",
        "AGENTDASH_VAR_DIR": str(var),
        "AGENTDASH_WORKSPACES_DIR": str(var / "workspaces"),
        "AGENTDASH_INPROCESS_WORKER": "1",
        # Sessions made here with the test client are valid there (signed with this key).
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    for name in (*PROVIDER_ENVIRONMENT, "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"):
        env.pop(name, None)
    command = [sys.executable, "manage.py", "serve", "--port", str(port), "--no-migrate"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(process, url, log)
        yield Server(url=url, workspaces=var / "workspaces", log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `bash scripts/system-deps.sh` installs it")
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # see the module's docstring
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        expect.set_options(timeout=TIMEOUT_MS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def _settle(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[None]:
    """After each test, let the server's worker finish the steps the test set going,
    so that emptying the database does not pull rows from under a running step."""
    yield
    from agentdash.models import AgentSession
    from agentdash.states import SessionStatus

    busy = AgentSession.objects.filter(status__in=[SessionStatus.QUEUED, SessionStatus.RUNNING])
    deadline = time.monotonic() + SETTLE_SECONDS
    while busy.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


OpenPage = Callable[[AbstractBaseUser | None, str], Page]


@pytest.fixture
def open_page(
    browser: Browser,
    server: Server,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OpenPage]:
    """`open_page(user, path)`: a page in a browser of its own (its own cookies), logged
    in as `user` (None: logged out), at `path`. On failure every page is saved as a PNG."""
    contexts = []

    def open_as(user: AbstractBaseUser | None, path: str) -> Page:
        context = browser.new_context(base_url=server.url, viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        if user is not None:
            client = Client()
            client.force_login(user)
            cookie = client.cookies[settings.SESSION_COOKIE_NAME]
            context.add_cookies(
                [{"name": cookie.key, "value": cookie.value, "url": server.url, "httpOnly": True}]
            )
        page = context.new_page()
        page.goto(path)
        return page

    yield open_as
    if _failed(request):
        folder = tmp_path_factory.mktemp("e2e-failure")
        for number, context in enumerate(contexts):
            for page_number, page in enumerate(context.pages):
                shot = folder / f"{request.node.name}-{number}-{page_number}.png"
                page.screenshot(path=shot, full_page=True)
                print(f"screenshot of {page.url}: {shot}")
        print(f"server log: {server.log}")
    for context in contexts:
        context.close()


def wait_until_live(page: Page) -> None:
    """The page's socket is open and its snapshot is in: what happens now arrives live."""
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")
