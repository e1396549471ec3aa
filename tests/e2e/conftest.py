"""Browser end-to-end fixtures: the real product, Debian's Chromium, logged-in operators.

The server is `manage.py serve` in a child process (tests/e2e/server.py): Daphne, the
step worker inside it and the in-memory channel layer, exactly the embedded default that
`make run` starts. It opens pytest-django's test database (file-backed SQLite, or
PostgreSQL in `make test`'s second pass, with Redis as the channel layer then), so a test
creates users and sessions with the ORM and the server (and its worker) sees them once
committed: every e2e test is transactional, and the database is emptied after each one.

Playwright's sync API keeps an asyncio loop running in the test's thread for as long as
the browser is open, and Django's ORM refuses to run in a thread with a running loop
(SynchronousOnlyOperation). Nothing else runs on that loop while a test reads or writes
the database: that is the case DJANGO_ALLOW_ASYNC_UNSAFE exists for, and it is set while
the browser is open only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.browser import TIMEOUT_MS, VIEWPORT, launch
from tests.e2e.server import Server, serving, session_cookie
from tests.subprocesses import database_url

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


@pytest.fixture(scope="package")
def server(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The product on the test database, for the e2e tests only (package scope: its
    worker must not contend for SQLite's lock with the other tests' transactions).

    In `make test`'s second pass (DATABASE_URL and REDIS_URL set) it runs scaled out's
    way: on PostgreSQL, its pushes through Redis."""
    with django_db_blocker.unblock():
        url = database_url()
    redis_url = os.environ.get("REDIS_URL")
    with serving(
        var_dir=tmp_path_factory.mktemp("server-var"),
        database_url=url,
        environment={"REDIS_URL": redis_url} if redis_url else None,
    ) as running:
        yield running


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # see the module's docstring
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def _settle(transactional_db: None, server: Server) -> Iterator[None]:
    """After each test, let the server's worker finish the steps the test set going, so
    that emptying the database does not pull rows from under a running step. A step's
    task row is written after the session's state: both are waited for."""
    yield
    from django_tasks_db.models import DBTaskResult

    from agentdash.models import AgentSession
    from agentdash.states import SessionStatus

    def busy() -> bool:
        live = [SessionStatus.QUEUED, SessionStatus.RUNNING]
        return (
            AgentSession.objects.filter(status__in=live).exists()
            or DBTaskResult.objects.ready().exists()
            or DBTaskResult.objects.running().exists()
        )

    deadline = time.monotonic() + SETTLE_SECONDS
    while busy():
        if time.monotonic() > deadline:
            pytest.fail(f"the server's worker is stuck; its log: {server.log}")
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
            name, value = session_cookie(user)
            context.add_cookies([{"name": name, "value": value, "url": server.url}])
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
