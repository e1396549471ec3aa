"""/metrics: what Prometheus scrapes, read from the database, and who may scrape it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from agentdash import metrics, verification
from agentdash.approvals import decide
from agentdash.models import AgentSession, ApiToken, AuditEvent, ExecutionResult, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState
from tests.api.conftest import bearer, tool_use

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client: Client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


# --- who may scrape ---------------------------------------------------------------------


def test_anonymous_scrapes_get_401_json_not_a_login_page(client):
    response = client.get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "API token" in response.json()["detail"]


def test_a_logged_in_user_who_is_not_staff_gets_403(client, viewer):
    client.force_login(viewer)

    assert client.get("/metrics").status_code == 403


def test_staff_in_the_browser_or_any_valid_token_may_scrape(client, viewer, django_user_model):
    staff = django_user_model.objects.create_user("stella", password="pw-stella-123", is_staff=True)
    client.force_login(staff)
    assert client.get("/metrics").status_code == 200

    row, token = ApiToken.issue(viewer, "prometheus")
    assert Client().get("/metrics", **bearer(token)).status_code == 200
    assert Client().get("/metrics", **bearer(token + "x")).status_code == 401
    row.revoke()
    refused = Client().get("/metrics", **bearer(token))
    assert refused.status_code == 401
    assert "'prometheus' was revoked" in refused.json()["detail"]


# --- what it says -----------------------------------------------------------------------


@pytest.fixture
def scraper(viewer) -> dict[str, str]:
    return bearer(ApiToken.issue(viewer, "prometheus")[1])


def write_call(owner, run_queued_steps, goal: str) -> ToolCall:
    session = start_session(
        goal=goal,
        owner=owner,
        script=[
            [tool_use("write_file", "w1", path="a.md", content="a\n")],
            [{"type": "text", "text": "ok"}],
        ],
    )
    run_queued_steps()
    return ToolCall.objects.get(session=session)


def test_calls_queue_and_usage_are_counted_from_the_database(
    client, scraper, operator, run_queued_steps
):
    waiting = write_call(operator, run_queued_steps, "waits")
    ran = write_call(operator, run_queued_steps, "runs")
    decide(ran.pk, user=operator, approve=True)
    run_queued_steps()
    invented = start_session(
        goal="confused", owner=operator, script=[[tool_use("launch_missiles", "m1")]]
    )
    run_queued_steps()
    ToolCall.objects.filter(pk=waiting.pk).update(
        proposed_at=timezone.now() - dt.timedelta(minutes=10)
    )
    AgentSession.objects.filter(pk=ran.session_id).update(
        input_tokens=1000, output_tokens=50, cost=Decimal("0.25")
    )
    AgentSession.objects.exclude(pk=ran.session_id).update(input_tokens=1, output_tokens=2)

    samples = scrape(client, **scraper)

    assert (
        samples["agentdash_tool_calls", (("state", "pending_approval"), ("tool", "write_file"))]
        == 1
    )
    assert samples["agentdash_tool_calls", (("state", "succeeded"), ("tool", "write_file"))] == 1
    assert ToolCall.objects.get(session=invented).state == CallState.ERRORED
    assert samples["agentdash_tool_calls", (("state", "errored"), ("tool", "(unknown)"))] == 1
    assert (
        samples["agentdash_tool_executions_total", (("status", "success"), ("tool", "write_file"))]
        == 1
    )
    assert samples["agentdash_approval_queue_depth", ()] == 1
    assert 600 <= samples["agentdash_approval_oldest_wait_seconds", ()] < 700
    assert samples["agentdash_sessions", (("status", "waiting_approval"),)] == 1
    scripted = (("model", "scripted"), ("provider", "scripted"))
    assert samples["agentdash_tokens_total", (("direction", "input"), *scripted)] == 1002
    assert samples["agentdash_tokens_total", (("direction", "output"), *scripted)] == 54
    assert samples["agentdash_cost_usd_total", scripted] == 0.25


def test_durations_and_waits_are_histograms_counted_by_the_database(
    client, scraper, operator, run_queued_steps
):
    calls = []
    for seconds_waited, run_ms in [(90, 300), (4000, 30)]:
        call = write_call(operator, run_queued_steps, f"waited {seconds_waited}")
        decide(call.pk, user=operator, approve=True)
        run_queued_steps()
        ToolCall.objects.filter(pk=call.pk).update(
            decided_at=call.proposed_at + dt.timedelta(seconds=seconds_waited)
        )
        ExecutionResult.objects.filter(tool_call=call).update(duration_ms=run_ms)
        calls.append(call)

    samples = scrape(client, **scraper)

    def bucket(name: str, le: str) -> float:
        return samples[f"{name}_bucket", (("le", le), ("tool", "write_file"))]

    run = "agentdash_tool_execution_seconds"
    assert [bucket(run, le) for le in ("0.01", "0.05", "0.25", "0.5", "+Inf")] == [0, 1, 1, 2, 2]
    assert samples[f"{run}_count", (("tool", "write_file"),)] == 2
    assert samples[f"{run}_sum", (("tool", "write_file"),)] == pytest.approx(0.33)
    wait = "agentdash_approval_wait_seconds"
    assert [bucket(wait, le) for le in ("60", "120", "3600", "14400", "+Inf")] == [0, 1, 1, 2, 2]
    assert samples[f"{wait}_sum", (("tool", "write_file"),)] == pytest.approx(4090)


# --- a scrape stays cheap as history grows -----------------------------------------------


@pytest.fixture
def no_commit_margin(monkeypatch) -> None:
    """Settled rows are folded into the running totals at once, not a minute later."""
    monkeypatch.setattr(metrics, "COMMIT_MARGIN_SECONDS", 0.0)


@pytest.mark.usefixtures("no_commit_margin")
def test_settled_rows_are_counted_once_and_moving_ones_on_every_scrape(
    client, scraper, operator, run_queued_steps
):
    done = write_call(operator, run_queued_steps, "done")
    decide(done.pk, user=operator, approve=True)
    run_queued_steps()
    waiting = write_call(operator, run_queued_steps, "waits")
    state = ("agentdash_tool_calls", "state")

    first = scrape(client, **scraper)

    assert first[state[0], ((state[1], "succeeded"), ("tool", "write_file"))] == 1
    assert first[state[0], ((state[1], "pending_approval"), ("tool", "write_file"))] == 1
    # The finished call is in the running total; the waiting call is pinned, counted live.
    assert metrics.CALLS.settled_up_to == waiting.pk
    assert metrics.CALLS.pinned == {waiting.pk}
    # Proof that a settled row is not read again: a change to it (which the application
    # never makes) does not show.
    ToolCall.objects.filter(pk=done.pk).update(tool_name="read_file")
    decide(waiting.pk, user=operator, approve=False, reason="no")
    run_queued_steps()

    second = scrape(client, **scraper)

    assert second[state[0], ((state[1], "succeeded"), ("tool", "write_file"))] == 1
    assert second[state[0], ((state[1], "rejected"), ("tool", "write_file"))] == 1
    assert (state[0], ((state[1], "pending_approval"), ("tool", "write_file"))) not in second
    assert metrics.CALLS.settled_up_to == ToolCall.objects.latest("pk").pk
    assert metrics.CALLS.pinned == set()
    assert second["agentdash_sessions", (("status", "completed"),)] == 2


@pytest.mark.usefixtures("no_commit_margin")
def test_a_call_that_never_settles_does_not_hold_later_ones_back(
    client, scraper, operator, run_queued_steps
):
    """A cancel while a tool runs leaves its call interrupted for good: the calls after it
    must still settle, or every scrape would read them all again."""
    stuck = write_call(operator, run_queued_steps, "stuck")
    ToolCall.objects.filter(pk=stuck.pk).update(state=CallState.INTERRUPTED)
    for number in range(3):
        call = write_call(operator, run_queued_steps, f"later {number}")
        decide(call.pk, user=operator, approve=True)
    run_queued_steps()

    scrape(client, **scraper)
    samples = scrape(client, **scraper)

    assert metrics.CALLS.settled_up_to == ToolCall.objects.latest("pk").pk
    assert metrics.CALLS.pinned == {stuck.pk}
    assert samples["agentdash_tool_calls", (("state", "succeeded"), ("tool", "write_file"))] == 3
    assert samples["agentdash_tool_calls", (("state", "interrupted"), ("tool", "write_file"))] == 1


def test_rows_are_not_folded_before_every_lower_id_has_had_time_to_commit(
    client, scraper, operator, run_queued_steps
):
    done = write_call(operator, run_queued_steps, "done")
    decide(done.pk, user=operator, approve=True)
    run_queued_steps()

    samples = scrape(client, **scraper)

    assert samples["agentdash_tool_calls", (("state", "succeeded"), ("tool", "write_file"))] == 1
    assert metrics.CALLS.settled_up_to == 0  # the first scrape saw the ids just now


@pytest.mark.usefixtures("no_commit_margin")
def test_a_scrape_runs_the_same_queries_however_much_history_there_is(
    client, scraper, operator, run_queued_steps
):
    def calls_then_scrape(count: int) -> int:
        for number in range(count):
            call = write_call(operator, run_queued_steps, f"call {number}")
            decide(call.pk, user=operator, approve=True)
        run_queued_steps()
        scrape(client, **scraper)  # folds what settled
        with CaptureQueriesContext(connection) as queries:
            scrape(client, **scraper)
        return len(queries)

    assert calls_then_scrape(1) == calls_then_scrape(4)


def test_the_audit_log_and_its_last_verification(client, scraper, operator, run_queued_steps):
    write_call(operator, run_queued_steps, "something to log")
    head = AuditEvent.objects.latest("seq").seq

    before = scrape(client, **scraper)

    assert before["agentdash_audit_events", ()] == head
    assert before["agentdash_audit_chain_verification_running", ()] == 0
    assert ("agentdash_audit_chain_ok", ()) not in before  # never verified: no value

    verification.request("user:olivia", full=True)
    assert scrape(client, **scraper)["agentdash_audit_chain_verification_running", ()] == 1
    run_queued_steps()

    after = scrape(client, **scraper)

    assert after["agentdash_audit_events", ()] == head + 1  # the check's own record
    assert after["agentdash_audit_chain_ok", ()] == 1
    assert after["agentdash_audit_chain_verified_up_to_seq", ()] == head
    assert after["agentdash_audit_chain_verification_running", ()] == 0
    verified_at = verification.state().verified_at.timestamp()
    assert after["agentdash_audit_chain_verified_timestamp_seconds", ()] == verified_at
