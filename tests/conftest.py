"""Shared fixtures: people, isolated workspaces, and a way to run queued steps."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission
from django.db import connection

PROVIDER_ENVIRONMENT = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # `make test` runs the postgres-marked tests in a second pass with DATABASE_URL set;
    # anywhere else they would only test SQLite again under a misleading name.
    if item.get_closest_marker("postgres") and connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: DATABASE_URL=postgres://... pytest -m postgres")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    # Before any fixture's teardown: the live publisher renders on its own thread, and its
    # reads must be done before a transactional test's database is flushed (on PostgreSQL
    # its joins and the flush's TRUNCATE of many tables could deadlock).
    from agentdash.live import publisher

    publisher.flush(timeout=60)


@pytest.fixture(autouse=True)
def _no_provider_environment(monkeypatch) -> None:
    """A developer's real API keys must never reach a test, nor change what it sees."""
    for name in PROVIDER_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _isolated_workspaces(settings, tmp_path) -> None:
    """Each test's sessions get workspaces under its own temporary directory."""
    settings.AGENTDASH_WORKSPACES_DIR = tmp_path / "workspaces"


@pytest.fixture
def operator(django_user_model):
    """An operator who may approve and reject tool calls."""
    user = django_user_model.objects.create_user("olivia", password="pw-olivia-123")
    user.user_permissions.add(Permission.objects.get(codename="decide_toolcall"))
    return django_user_model.objects.get(pk=user.pk)  # fresh permission cache


@pytest.fixture
def second_operator(django_user_model):
    user = django_user_model.objects.create_user("oscar", password="pw-oscar-123")
    user.user_permissions.add(Permission.objects.get(codename="decide_toolcall"))
    return django_user_model.objects.get(pk=user.pk)


@pytest.fixture
def viewer(django_user_model):
    """Logged in, but without the permission to decide."""
    return django_user_model.objects.create_user("victor", password="pw-victor-123")


@pytest.fixture
def run_queued_steps() -> Callable[[], None]:
    """Run every queued step in this thread, as a worker would, until none is left, and
    wait for their live pushes (a socket opened afterwards must not receive them late)."""
    from agentdash.live import publisher
    from agentdash.worker import StepWorker

    def run() -> None:
        StepWorker().run_ready_steps()
        # Generous: on Redis (make test's second pass) every change is pushed, whoever
        # listens, and the pushes of earlier tests may still be queued before these.
        assert publisher.flush(timeout=60), "the steps' live pushes were not sent in time"

    return run
