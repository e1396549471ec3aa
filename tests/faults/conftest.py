"""Fault tests: real processes (workers, the web server, Redis) killed or cut off while
they work. The helpers are the ones the crash-safety tests (tests/runner) and the
browser tests (tests/e2e) use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.e2e.browser import launch
from tests.e2e.conftest import open_page as open_page
from tests.e2e.conftest import pytest_runtest_makereport as pytest_runtest_makereport
from tests.e2e.server import Server, ServerProcess, running
from tests.runner.test_crash_safety import spawn_worker as spawn_worker
from tests.subprocesses import database_url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium as the e2e tests launch it, but for one module at a time: while it is
    open, DJANGO_ALLOW_ASYNC_UNSAFE is set (see tests/e2e/conftest.py), and the worker
    processes that other modules start inherit this process's environment."""
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def server_environment() -> dict[str, str]:
    """What the server is given on top of the embedded default (a module may override)."""
    return {}


@pytest.fixture
def server_process(
    transactional_db: None, tmp_path, server_environment: dict[str, str]
) -> Iterator[ServerProcess]:
    """`manage.py serve` (with its in-process worker) on the test database, for this test
    alone: it is killed and restarted. Stopped before the database is emptied."""
    var_dir = tmp_path / "server-var"
    var_dir.mkdir()
    with running(
        var_dir=var_dir, database_url=database_url(), environment=server_environment
    ) as process:
        yield process


@pytest.fixture
def server(server_process: ServerProcess) -> Server:
    """The server that tests/e2e's `open_page` opens pages on."""
    return server_process.server
