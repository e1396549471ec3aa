"""Concurrent writers, each on its own connection, never fork the chain."""

import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection, connections, transaction

from agentdash import audit
from agentdash.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)  # threads need committed data


def in_thread(work: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    """A started thread running `work` on its own database connection."""

    def run() -> None:
        try:
            work()
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)
        finally:
            connections.close_all()  # this thread's connections only

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def hammer_the_chain(writers: int = 8, events_each: int = 25) -> None:
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(writer: int) -> Callable[[], None]:
        def work() -> None:
            start.wait()
            for number in range(events_each):
                with transaction.atomic():
                    audit.record(
                        "toolcall.proposed", actor=f"worker:{writer}", payload={"n": number}
                    )

        return work

    threads = [in_thread(write(writer), errors) for writer in range(writers)]
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    report = audit.verify()
    assert report.ok, report.problem
    assert report.events_checked == writers * events_each
    for writer in range(writers):  # every writer's events are there, in its own order
        numbers = AuditEvent.objects.filter(actor=f"worker:{writer}").values_list("payload__n")
        assert [n for (n,) in numbers] == list(range(events_each))


def test_concurrent_writers_never_fork_the_chain():
    hammer_the_chain()


@pytest.mark.postgres
def test_concurrent_writers_never_fork_the_chain_on_postgresql():
    hammer_the_chain()


def waiting_advisory_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return cursor.fetchone()[0]


@pytest.mark.postgres
def test_a_second_writer_waits_for_the_first_to_commit_and_chains_after_it():
    recorded, commit = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        with transaction.atomic():
            audit.record("toolcall.proposed", actor="worker:first")
            recorded.set()
            commit.wait(timeout=30)

    def second() -> None:
        with transaction.atomic():
            audit.record("toolcall.proposed", actor="worker:second")

    first_thread = in_thread(first, errors)
    assert recorded.wait(timeout=30)
    second_thread = in_thread(second, errors)
    deadline = time.monotonic() + 30
    while waiting_advisory_locks() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the second writer is queued on the chain's lock
    assert waiting_advisory_locks() == 1
    assert not AuditEvent.objects.exists()  # nothing committed while the lock is held
    commit.set()
    first_thread.join(timeout=30)
    second_thread.join(timeout=30)

    assert errors == []
    assert list(AuditEvent.objects.values_list("seq", "actor")) == [
        (1, "worker:first"),
        (2, "worker:second"),
    ]
    assert audit.verify().ok
