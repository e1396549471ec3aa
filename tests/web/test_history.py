"""The audit history page: filters, search, keyset pages, exports, the chain's status."""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import io
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from agentdash import audit, verification
from agentdash.approvals import decide
from agentdash.models import AuditEvent, ChainVerification, ToolCall
from agentdash.sessions import start_session
from agentdash.web import history
from agentdash.web.history_query import HistoryFilterForm, page_of

INDEX = reverse("history:index")
SCRIPT = "<script>alert('pwned')</script>"


def record(kind: str = "toolcall.proposed", *, actor: str = "model", **fields: Any) -> AuditEvent:
    with transaction.atomic():
        return audit.record(kind, actor=actor, **fields)


def seqs(response) -> list[int]:
    return [row.event.seq for row in response.context["rows"]]


def page_links(response) -> tuple[str | None, str | None]:
    return response.context["newer_url"], response.context["older_url"]


@pytest.fixture
def logged_in(client: Client, viewer) -> Client:
    client.force_login(viewer)
    return client


def tool_use(name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


@pytest.fixture
def story(run_queued_steps, operator) -> dict[str, Any]:
    """Two sessions run by the real runner: a listing, an approved write, a rejected write.

    The approved write carries a <script> in its arguments, as a hostile model might.
    """
    first = start_session(
        goal="Tidy the notes",
        owner=operator,
        script=[
            [tool_use("list_dir", "c1", path=".")],
            [tool_use("write_file", "c2", path="notes.md", content=SCRIPT)],
            [{"type": "text", "text": "Done."}],
        ],
    )
    second = start_session(
        goal="Write a poem",
        owner=operator,
        script=[[tool_use("write_file", "c3", path="poem.md", content="naïve ☕ roses")]],
    )
    run_queued_steps()
    for call in ToolCall.objects.filter(state="pending_approval").order_by("pk"):
        approve = call.session_id == first.pk
        decide(call.pk, user=operator, approve=approve, reason="ok" if approve else "no poems")
    run_queued_steps()
    return {"first": first, "second": second}


# --- login --------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", INDEX),
        ("get", reverse("history:export", args=["jsonl"])),
        ("get", reverse("history:charts")),
        ("post", reverse("history:verify")),
    ],
)
def test_an_anonymous_visitor_is_sent_to_the_login_page(client, method, url):
    response = getattr(client, method)(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"
    assert not AuditEvent.objects.filter(kind="audit.verified").exists()


# --- the page and its filters ---------------------------------------------------------------


@pytest.mark.django_db
def test_it_shows_the_newest_events_first_and_the_size_of_the_log(logged_in):
    for number in range(3):
        record(session_id=1, payload={"number": number})

    response = logged_in.get(INDEX)

    assert response.status_code == 200
    assert seqs(response) == [3, 2, 1]
    assert response.context["head_seq"] == 3
    assert "3 events in the log" in response.text
    assert page_links(response) == (None, None)


@pytest.mark.django_db(transaction=True)
def test_it_filters_by_the_tool_of_the_call(logged_in, story):
    response = logged_in.get(INDEX, {"tool": "write_file"})

    writes = ToolCall.objects.filter(tool_name="write_file").values_list("pk", flat=True)
    expected = AuditEvent.objects.filter(tool_call_id__in=writes).order_by("-seq")
    assert seqs(response) == list(expected.values_list("seq", flat=True))
    assert {row.tool for row in response.context["rows"]} == {"write_file"}
    assert {row.event.kind for row in response.context["rows"]} >= {
        "toolcall.pending_approval",
        "toolcall.approved",
        "toolcall.rejected",
        "toolcall.succeeded",
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("filters", "expected_kinds"),
    [
        ({"kind": "toolcall.rejected"}, ["toolcall.rejected"]),
        ({"kind": "toolcall.succeeded", "tool": "list_dir"}, ["toolcall.succeeded"]),
        ({"actor": "user:olivia", "kind": "toolcall.approved"}, ["toolcall.approved"]),
        (
            {"tool": "list_dir"},
            ["toolcall.succeeded", "toolcall.running", "toolcall.auto_approved"],
        ),
    ],
)
def test_filters_combine(logged_in, story, filters, expected_kinds):
    response = logged_in.get(INDEX, filters)

    assert [row.event.kind for row in response.context["rows"]] == expected_kinds


@pytest.mark.django_db(transaction=True)
def test_it_filters_by_session(logged_in, story):
    second = story["second"].pk

    response = logged_in.get(INDEX, {"session": second})

    expected = AuditEvent.objects.filter(session_id=second).order_by("-seq")
    assert seqs(response) == list(expected.values_list("seq", flat=True))
    assert response.context["rows"][-1].event.kind == "session.created"


@pytest.mark.django_db
def test_it_filters_by_a_time_range_from_included_to_excluded(logged_in):
    events = [record(payload={"number": number}) for number in range(4)]
    since, until = events[1].created_at, events[3].created_at

    form = HistoryFilterForm({"since": since.isoformat(), "until": until.isoformat()})

    assert form.is_valid(), form.errors
    assert sorted(form.events().values_list("seq", flat=True)) == [2, 3]


@pytest.mark.django_db
def test_a_time_range_is_exact_even_when_a_clock_stepped_back(monkeypatch):
    # Minutes from the first event; the fourth was stamped by a clock 7 minutes behind.
    minutes = [0, 30, 60, 53, 90, 120, 150, 151, 240]
    start = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
    for offset in minutes:
        monkeypatch.setattr(
            timezone, "now", lambda offset=offset: start + dt.timedelta(minutes=offset)
        )
        record(payload={"minute": offset})
    monkeypatch.undo()

    for since, until in itertools.permutations([None, *range(-5, 250, 5), 53, 54, 151], 2):
        if since is not None and until is not None and since >= until:
            continue
        params = {
            name: (start + dt.timedelta(minutes=value)).isoformat()
            for name, value in (("since", since), ("until", until))
            if value is not None
        }
        form = HistoryFilterForm(params)
        assert form.is_valid(), form.errors
        found = sorted(event.payload["minute"] for event in form.events())
        expected = sorted(
            minute
            for minute in minutes
            if (since is None or minute >= since) and (until is None or minute < until)
        )
        assert found == expected, params


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "matches"),
    [
        ("RM -RF", ["rm -rf /tmp/cache"]),  # any case
        ('say "hi"', ['say "hi" twice']),  # quotes are escaped inside the JSON text
        ("naïve", ["a naïve ☕ poem"]),  # stored as \u escapes on SQLite, as is on PostgreSQL
        ("100%", ["100% done"]),  # a LIKE wildcard is taken literally
        ("nothing like it", []),
    ],
)
def test_search_finds_text_inside_the_arguments(logged_in, query, matches):
    for text in ["rm -rf /tmp/cache", 'say "hi" twice', "a naïve ☕ poem", "100% done", "1000 x"]:
        record("toolcall.pending_approval", payload={"arguments": {"command": text}})

    response = logged_in.get(INDEX, {"q": query})

    found = [row.event.payload["arguments"]["command"] for row in response.context["rows"]]
    assert found == matches


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"session": "abc"}, "session", "Enter a whole number."),
        ({"session": "0"}, "session", "greater than or equal to 1"),
        ({"kind": "toolcall.exploded"}, "kind", "Select a valid choice."),
        ({"since": "yesterday-ish"}, "since", "Enter a valid date/time."),
        ({"since": "2026-11-02T10:00", "until": "2026-11-01T10:00"}, "until", "later than From"),
        ({"before": "-5"}, "before", "greater than or equal to 1"),
        ({"q": "x" * 201}, "q", "at most 200 characters"),
    ],
)
def test_bad_filters_are_refused_with_the_error_next_to_the_field(
    logged_in, params, field, message
):
    record()

    response = logged_in.get(INDEX, params)

    assert response.status_code == 400
    assert message in " ".join(response.context["form"].errors[field])
    assert "rows" not in response.context
    if field != "before":  # a hidden field's error is shown above the form
        assert f'id="id_{field}-error"' in response.text


@pytest.mark.django_db
def test_paging_both_ways_at_once_is_refused(logged_in):
    response = logged_in.get(INDEX, {"before": "5", "after": "1"})

    assert response.status_code == 400
    assert "not both" in response.text


# --- keyset pagination ------------------------------------------------------------------------


@pytest.fixture
def many_events() -> Callable[[int], None]:
    def make(count: int) -> None:
        with transaction.atomic():
            for number in range(count):
                audit.record(
                    "model.replied" if number % 2 else "toolcall.proposed",
                    actor="model",
                    session_id=1 + number % 3,
                    payload={"number": number},
                )

    return make


def follow(client: Client, url: str | None):
    assert url is not None
    return client.get(INDEX + url)


@pytest.mark.django_db
def test_older_links_walk_the_whole_filter_once_and_newer_links_walk_back(logged_in, many_events):
    many_events(300)  # session 1 holds seqs 1, 4, 7, ..., 298: two full pages

    pages = [logged_in.get(INDEX, {"session": "1"})]
    while (older := page_links(pages[-1])[1]) is not None:
        pages.append(follow(logged_in, older))

    assert [len(seqs(page)) for page in pages] == [50, 50]
    assert [seq for page in pages for seq in seqs(page)] == list(range(298, 0, -3))
    back = follow(logged_in, page_links(pages[-1])[0])
    assert seqs(back) == seqs(pages[0])
    assert page_links(back) == (None, f"?session=1&before={seqs(back)[-1]}")


@pytest.mark.django_db
def test_an_older_page_stays_put_while_events_are_appended(logged_in, many_events):
    many_events(120)
    first = logged_in.get(INDEX)
    second_url = page_links(first)[1]
    second = follow(logged_in, second_url)

    many_events(30)
    again = follow(logged_in, second_url)

    assert seqs(again) == seqs(second) == list(range(70, 20, -1))
    newer = follow(logged_in, page_links(again)[0])
    assert seqs(newer) == list(range(120, 70, -1))  # the page it came from, not the new head
    assert page_links(newer)[0] is not None  # and it knows that newer events arrived


@pytest.mark.django_db
def test_the_oldest_page_starts_at_the_first_event(logged_in, many_events):
    many_events(70)

    oldest = logged_in.get(INDEX + logged_in.get(INDEX).context["oldest_url"])

    assert seqs(oldest) == list(range(50, 0, -1))
    assert page_links(oldest) == ("?after=50", None)


@pytest.mark.django_db
def test_page_of_reads_a_bounded_number_of_rows(django_assert_max_num_queries, many_events):
    many_events(500)
    form = HistoryFilterForm({"session": "2"})
    assert form.is_valid()

    with django_assert_max_num_queries(2) as captured:
        page = page_of(form.events(), before=300, size=10)

    assert [event.seq for event in page.events] == list(range(299, 270, -3))
    sql = " ".join(query["sql"].upper() for query in captured.captured_queries)
    assert "OFFSET" not in sql
    assert "COUNT(" not in sql


# --- export -------------------------------------------------------------------------------


def parse_export(fmt: str, text: str) -> list[dict[str, Any]]:
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    rows = list(csv.DictReader(io.StringIO(text)))
    return [row | {"seq": int(row["seq"]), "payload": json.loads(row["payload"])} for row in rows]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_the_export_holds_every_event_of_the_filter_not_just_one_page(logged_in, story, fmt):
    filters = {"tool": "write_file", "before": "3"}  # the cursor is no filter: it is ignored

    response = logged_in.get(reverse("history:export", args=[fmt]), filters)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith(history.EXPORT_CONTENT_TYPES[fmt])
    assert f'.{fmt}"' in response["Content-Disposition"]
    exported = parse_export(fmt, b"".join(response.streaming_content).decode())
    writes = ToolCall.objects.filter(tool_name="write_file").values_list("pk", flat=True)
    expected = AuditEvent.objects.filter(tool_call_id__in=writes).order_by("seq")
    assert [event["seq"] for event in exported] == list(expected.values_list("seq", flat=True))
    assert exported[-1]["hash"] == expected.last().hash
    arguments = [event["payload"].get("arguments") for event in exported]
    assert {"path": "notes.md", "content": SCRIPT} in arguments


@pytest.mark.django_db
def test_an_export_with_bad_filters_is_refused(logged_in):
    response = logged_in.get(reverse("history:export", args=["csv"]), {"session": "x"})

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert "Enter a whole number." in response.text


@pytest.mark.django_db
def test_an_unknown_export_format_is_not_found(logged_in):
    assert logged_in.get(reverse("history:export", args=["xml"])).status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_through_asgi_the_export_streams_chunk_by_chunk(async_client, viewer, monkeypatch):
    monkeypatch.setattr(history, "EXPORT_LINES_PER_CHUNK", 10)
    await _record_many(35)
    await async_client.aforce_login(viewer)

    response = await async_client.get(reverse("history:export", args=["jsonl"]))

    assert response.status_code == 200
    assert response.is_async  # Django would otherwise collect the whole export in memory
    chunks = [chunk async for chunk in response.streaming_content]
    # The chunks were read in asgiref's sync thread; Daphne would close its connection
    # when the response ends, a test client does not.
    await sync_to_async(connections.close_all)()
    assert [chunk.count(b"\n") for chunk in chunks] == [10, 10, 10, 5]
    assert [json.loads(line)["seq"] for line in b"".join(chunks).splitlines()] == list(range(1, 36))


async def _record_many(count: int) -> None:
    @sync_to_async
    def write() -> None:
        with transaction.atomic():
            for number in range(count):
                audit.record("model.replied", actor="model", payload={"number": number})

    await write()


# --- the chain's verification -------------------------------------------------------------------


_migration = importlib.import_module("agentdash.migrations.0001_initial")
VERIFY = reverse("history:verify")
TABLE = AuditEvent._meta.db_table


@pytest.fixture
def unguarded() -> Iterator[None]:
    """The append-only triggers dropped for the test, as tests/audit does to tamper."""
    with connection.cursor() as cursor:
        for sql in _migration.DROP_SQL[connection.vendor]:
            cursor.execute(sql)
    yield
    with connection.cursor() as cursor:
        for sql in _migration.APPEND_ONLY_SQL[connection.vendor]:
            cursor.execute(sql)


def verification_tasks() -> list[DBTaskResult]:
    return list(
        DBTaskResult.objects.ready().filter(
            task_path=verification.continue_verification.module_path
        )
    )


def chain_fragment(client: Client) -> str:
    response = client.get(VERIFY)
    assert response.status_code == 200
    return response.text


@pytest.mark.django_db
def test_a_chain_never_verified_says_so(logged_in):
    record()

    response = logged_in.get(INDEX)

    assert not response.context["chain"].checked
    assert "Never verified" in response.text
    assert "hx-trigger" not in response.text  # nothing to poll for


@pytest.mark.django_db
def test_verify_now_queues_a_check_and_answers_without_reading_the_chain(logged_in):
    for _ in range(30):
        record()

    with CaptureQueriesContext(connection) as queries:
        response = logged_in.post(VERIFY, {"filters": "actor=model&bad=%3Cx%3E"})

    assert response.status_code == 302
    assert response["Location"] == f"{INDEX}?actor=model&bad=%3Cx%3E"
    # The request read the log's head and nothing else of it; the walk is the job's.
    reads = [q["sql"] for q in queries.captured_queries if TABLE in q["sql"]]
    assert len(reads) == 1, reads
    assert "LIMIT 1" in reads[0]
    assert not AuditEvent.objects.filter(kind="audit.verified").exists()
    state = verification.state()
    assert (state.run_state, state.run_full, state.run_requested_by) == (
        "queued",
        True,
        "user:victor",
    )
    assert (state.run_from_seq, state.run_target_seq) == (0, 30)
    assert len(verification_tasks()) == 1

    page = logged_in.get(INDEX)
    assert "Queued:" in page.text
    assert 'hx-trigger="every 1s"' in page.text


# A worker's loop closes an idle connection, which a test transaction cannot survive.
@pytest.mark.django_db(transaction=True)
def test_the_job_runs_and_its_result_is_remembered_until_the_log_grows(
    logged_in, run_queued_steps, django_assert_max_num_queries
):
    for _ in range(4):
        record()
    logged_in.post(VERIFY)

    run_queued_steps()

    check = AuditEvent.objects.get(kind="audit.verified")
    assert (check.seq, check.actor) == (5, "user:victor")
    assert check.payload | {"seconds": 0} == {
        "ok": True,
        "full": True,
        "from_seq": 0,
        "events_checked": 4,
        "first_bad_seq": None,
        "problem": "",
        "head_seq": 4,
        "head_hash": AuditEvent.objects.get(seq=4).hash,
        "seconds": 0,
    }
    with django_assert_max_num_queries(12):  # the page reads the result, not the chain
        response = logged_in.get(INDEX)
    chain = response.context["chain"]
    assert (chain.checked, chain.verification.verified_ok, chain.stale) == (True, True, False)
    assert (chain.verification.verified_up_to_seq, chain.verification.verified_by) == (
        4,
        "user:victor",
    )
    assert "Intact</strong> up to event 4" in response.text
    assert "hx-trigger" not in response.text  # nothing runs: polling stops
    assert not verification_tasks()

    record()
    record()
    response = logged_in.get(INDEX)

    assert response.context["chain"].unchecked == 2
    assert "2 events appended since have not been checked" in response.text


@pytest.mark.django_db
def test_progress_is_shown_while_the_check_runs_slice_by_slice(logged_in, monkeypatch):
    monkeypatch.setattr(verification, "VERIFY_SLICE_EVENTS", 2)
    for _ in range(5):
        record()
    logged_in.post(VERIFY)

    outcome = verification.continue_verification.call()

    assert outcome == "checked up to event 2"
    fragment = chain_fragment(logged_in)
    assert "2 of 5 events checked (40%)" in fragment
    assert '<progress max="5" value="2">' in fragment
    assert 'hx-trigger="every 1s"' in fragment
    assert len(verification_tasks()) == 2  # the first slice's task is still there, ready

    verification.continue_verification.call()
    assert "4 of 5 events checked (80%)" in chain_fragment(logged_in)

    assert verification.continue_verification.call() == "chain intact"
    fragment = chain_fragment(logged_in)
    assert "Intact</strong> up to event 5" in fragment
    assert "hx-trigger" not in fragment
    assert verification.continue_verification.call() == "no verification in progress"


@pytest.mark.django_db
def test_a_second_click_shows_the_check_already_running(logged_in, client, operator):
    for _ in range(3):
        record()
    logged_in.post(VERIFY)
    client.force_login(operator)

    response = client.post(VERIFY, {"full": "1"}, headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert "asked for by user:victor" in response.text
    state = verification.state()
    assert (state.run_number, state.run_requested_by) == (1, "user:victor")
    assert len(verification_tasks()) == 1  # no second job
    assert "disabled" in response.text


@pytest.mark.django_db
def test_a_stalled_check_is_resumed_where_it_stopped_by_asking_again(logged_in, monkeypatch):
    monkeypatch.setattr(verification, "VERIFY_SLICE_EVENTS", 2)
    for _ in range(5):
        record()
    logged_in.post(VERIFY)
    verification.continue_verification.call()
    DBTaskResult.objects.all().delete()  # its worker died with the next slice
    long_ago = timezone.now() - verification.STALLED_AFTER * 2
    ChainVerification.objects.update(run_touched_at=long_ago)
    assert "Stalled:" in chain_fragment(logged_in)

    logged_in.post(VERIFY)

    assert len(verification_tasks()) == 1
    state = verification.state()
    assert (state.run_number, state.run_cursor_seq) == (1, 2)
    while verification.continue_verification.call() != "chain intact":
        pass
    assert verification.state().verified_events == 5


# A worker's loop closes an idle connection, which a test transaction cannot survive.
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("unguarded")
def test_a_tampered_chain_is_shown_broken_at_the_first_bad_event_with_a_link(
    logged_in, run_queued_steps
):
    for _ in range(5):
        record()
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET actor = %s WHERE seq = 3", ["user:mallory"])

    logged_in.post(VERIFY)
    run_queued_steps()
    response = logged_in.get(INDEX)

    chain = response.context["chain"]
    assert (chain.checked, chain.verification.verified_ok) == (True, False)
    assert chain.verification.first_bad_seq == 3
    assert "the event was edited" in response.text
    assert 'role="alert"' in response.text
    link = f'href="{INDEX}?before=4#event-3" data-testid="first-bad-event">event 3</a>'
    assert link in response.text
    assert seqs(logged_in.get(f"{INDEX}?before=4"))[0] == 3  # the link lands on it


# A worker's loop closes an idle connection, which a test transaction cannot survive.
@pytest.mark.django_db(transaction=True)
def test_an_incremental_check_reads_only_new_events_and_a_full_one_rereads_all(
    logged_in, unguarded, run_queued_steps
):
    for _ in range(4):
        record()
    logged_in.post(VERIFY)
    run_queued_steps()
    for _ in range(3):
        record()

    logged_in.post(VERIFY)  # incremental: the last check found events 1-4 good
    run_queued_steps()

    state = verification.state()
    assert (state.verified_full, state.verified_from_seq) == (False, 4)
    # Events 5-8: the first check's own record and the three appended since.
    assert (state.verified_events, state.verified_up_to_seq) == (4, 8)
    assert "4 new events checked after event 4" in logged_in.get(INDEX).text

    # What an incremental check cannot see, a full one does: an edit before its start.
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET actor = %s WHERE seq = 2", ["user:mallory"])
    logged_in.post(VERIFY)
    run_queued_steps()
    assert verification.state().verified_ok

    logged_in.post(VERIFY, {"full": "1"})
    run_queued_steps()

    state = verification.state()
    assert (state.verified_full, state.verified_ok, state.first_bad_seq) == (True, False, 2)


# A worker's loop closes an idle connection, which a test transaction cannot survive.
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("unguarded")
def test_an_incremental_check_notices_events_cut_off_the_end(logged_in, run_queued_steps):
    for _ in range(5):
        record()
    logged_in.post(VERIFY)
    run_queued_steps()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE seq >= 4")

    logged_in.post(VERIFY)
    run_queued_steps()

    state = verification.state()
    assert (state.verified_ok, state.first_bad_seq) == (False, 4)
    assert "events were cut off the end" in state.problem


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("unguarded")
def test_a_full_check_notices_events_cut_off_the_end(logged_in, run_queued_steps):
    """A full re-check after the log lost its end must not take the shorter log as the
    new baseline (a later routine check could no longer see the loss)."""
    for _ in range(5):
        record()
    logged_in.post(VERIFY)
    run_queued_steps()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE seq >= 4")

    logged_in.post(VERIFY, {"full": "1"})
    run_queued_steps()

    state = verification.state()
    assert (state.verified_ok, state.first_bad_seq) == (False, 4)
    assert "missing" in state.problem


@pytest.mark.django_db
def test_the_fragment_is_for_logged_in_users_and_reading_it_queues_nothing(client, viewer):
    record()

    assert client.get(VERIFY).status_code == 302
    client.force_login(viewer)
    assert "Never verified" in chain_fragment(client)
    assert not verification_tasks()
    assert verification.state().run_state == "idle"


# --- what models and tools wrote is text, never markup ------------------------------------------


@pytest.mark.django_db
def test_a_script_in_a_payload_is_shown_not_run(logged_in):
    record(
        "toolcall.pending_approval",
        actor=SCRIPT,
        payload={"arguments": {"content": SCRIPT}, SCRIPT: "key"},
    )

    response = logged_in.get(INDEX)

    assert SCRIPT not in response.text
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in response.text
    assert response.text.count("&lt;script&gt;") == 3  # the actor, the key, the value


@pytest.mark.django_db
def test_a_huge_payload_is_cut_on_the_page_and_whole_in_the_export(logged_in):
    record(payload={"content": "x" * 10_000})

    [row] = logged_in.get(INDEX).context["rows"]

    assert len(row.payload) == history.PAYLOAD_PREVIEW_CHARS
    assert row.cut_chars > 6000
    export = logged_in.get(reverse("history:export", args=["jsonl"]))
    assert json.loads(b"".join(export.streaming_content))["payload"]["content"] == "x" * 10_000


@pytest.mark.django_db
def test_times_are_shown_in_utc(logged_in):
    event = record()

    response = logged_in.get(INDEX)

    assert event.created_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") in response.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=0001-01-01T00:00", b"Must be between 1970 and 9999"),
        ("until=9999-12-31T23:59", b"Must be between 1970 and 9999"),
        ("before=99999999999999999999", b"less than or equal to"),
        ("session=99999999999999999999", b"less than or equal to"),
    ],
)
def test_out_of_range_filters_are_form_errors_not_crashes(client, operator, query, message):
    client.force_login(operator)
    response = client.get(f"/history/?{query}")
    assert response.status_code == 400
    assert message in response.content
