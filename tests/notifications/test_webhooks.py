"""Webhooks on calls that wait for an operator or expire: signed, retried, recorded,
and never in the way of the change they announce."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import socket
import time

import pytest
from django.db import transaction
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from agentdash import notifications, worker
from agentdash.models import AgentSession, ToolCall, WebhookDelivery, WebhookEndpoint
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus, transition
from tests.api.conftest import tool_use
from tests.notifications.receiver import Answer, WebhookReceiver

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "a-shared-secret-for-tests"
Status = WebhookDelivery.Status


@pytest.fixture(autouse=True)
def _quick_tries(settings) -> None:
    settings.AGENTDASH_WEBHOOK_BACKOFF_SECONDS = 0  # retries are due at once
    settings.AGENTDASH_WEBHOOK_TIMEOUT_SECONDS = 0.5
    settings.AGENTDASH_WEBHOOK_MAX_ATTEMPTS = 3
    settings.AGENTDASH_PUBLIC_URL = "https://agentdash.example.com"


@pytest.fixture
def receiver():
    with WebhookReceiver(SECRET) as receiver:
        yield receiver


@pytest.fixture
def endpoint(receiver) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(name="pager", url=receiver.url, secret=SECRET)


@pytest.fixture
def waiting_call(operator, run_queued_steps):
    """Start a session whose write_file call waits for an operator; run every queued
    task (the session's steps and the webhook deliveries) as a worker would."""

    def make(**arguments: str) -> ToolCall:
        arguments = {"path": "notes.md", "content": "hello\n"} | arguments
        session = start_session(
            goal="Keep notes",
            owner=operator,
            script=[[tool_use("write_file", "w1", **arguments)], [{"type": "text", "text": "ok"}]],
        )
        run_queued_steps()
        return ToolCall.objects.get(session=session)

    return make


def test_a_call_that_waits_is_announced_signed_with_links_to_decide_it(
    receiver, endpoint, waiting_call
):
    call = waiting_call(content="key: sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123")

    [request] = receiver.received
    assert request.signature_valid
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-agentdash-event"] == "toolcall.pending_approval"
    delivery = WebhookDelivery.objects.get()
    assert request.headers["x-agentdash-delivery"] == str(delivery.pk)
    body = request.payload
    assert body["event"] == "toolcall.pending_approval"
    assert body["tool_call"]["id"] == call.pk
    assert body["tool_call"]["tool"] == "write_file"
    assert body["tool_call"]["arguments"] == {"path": "notes.md", "content": "key: [REDACTED]"}
    assert "requires confirmation" in body["tool_call"]["approval_reason"]
    assert body["tool_call"]["url"] == f"https://agentdash.example.com/api/v1/calls/{call.pk}"
    assert body["session"] == {
        "id": call.session_id,
        "goal": "Keep notes",
        "url": f"https://agentdash.example.com/sessions/{call.session_id}/",
    }
    assert body["approval_queue_url"] == (
        f"https://agentdash.example.com/approvals/#queue-card-{call.pk}"
    )
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        Status.DELIVERED,
        1,
        204,
    )
    assert delivery.delivered_at is not None


def test_the_delivery_id_that_receivers_dedupe_on_is_signed(receiver, endpoint, waiting_call):
    waiting_call()

    [request] = receiver.received
    delivery = WebhookDelivery.objects.get()
    assert request.payload["delivery_id"] == delivery.pk
    assert request.headers["x-agentdash-delivery"] == str(delivery.pk)
    assert request.signature_valid
    # A recorded request, replayed as another delivery, does not verify.
    replayed = request.body.replace(
        f'"delivery_id":{delivery.pk},'.encode(), f'"delivery_id":{delivery.pk + 1},'.encode()
    )
    assert replayed != request.body
    assert not notifications.verify_signature(
        SECRET,
        body=replayed,
        timestamp=request.headers["x-agentdash-timestamp"],
        signature_header=request.headers["x-agentdash-signature"],
    )


def test_a_500_is_tried_again_with_the_same_body_and_delivery_id(receiver, endpoint, waiting_call):
    receiver.answer(Answer(500))

    waiting_call()

    first, second = receiver.received
    assert first.body == second.body
    assert first.headers["x-agentdash-delivery"] == second.headers["x-agentdash-delivery"]
    assert second.signature_valid
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        Status.DELIVERED,
        2,
        204,
    )


def test_a_timeout_is_tried_again(receiver, endpoint, waiting_call):
    receiver.answer(Answer(204, delay=1.0))  # longer than the 0.5 s the sender waits

    waiting_call()

    assert len(receiver.received) == 2
    assert WebhookDelivery.objects.get().attempts == 2


def test_an_answer_dripped_out_slowly_is_cut_off_at_the_timeout(receiver, waiting_call):
    call = waiting_call()  # no endpoint yet: nothing sent
    WebhookEndpoint.objects.create(name="pager", url=receiver.url, secret=SECRET)
    [delivery] = notifications.queue_event("toolcall.pending_approval", call.pk)
    # A header line every 0.2 s for 3 s: each read is well within the 0.5 s timeout.
    receiver.answer(Answer(204, drip=3.0))

    started = time.monotonic()
    assert notifications.deliver.call(delivery.pk) == "retrying"
    assert time.monotonic() - started < 1.5

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        Status.PENDING,
        1,
        None,
    )
    assert delivery.last_error == "no answer within 0.5 s"


def test_a_name_lookup_that_hangs_is_cut_off_at_the_timeout(waiting_call, monkeypatch):
    call = waiting_call()
    WebhookEndpoint.objects.create(name="pager", url="http://pager.invalid/hook", secret=SECRET)
    [delivery] = notifications.queue_event("toolcall.pending_approval", call.pk)
    lookup = socket.getaddrinfo

    def slow_resolver(*args, **kwargs):
        time.sleep(3)
        return lookup(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)

    started = time.monotonic()
    assert notifications.deliver.call(delivery.pk) == "retrying"
    assert time.monotonic() - started < 1.5
    delivery.refresh_from_db()
    assert delivery.last_error == "no answer within 0.5 s"


def test_after_the_last_attempt_the_delivery_fails_with_the_reason_kept(
    receiver, endpoint, waiting_call, settings
):
    settings.AGENTDASH_WEBHOOK_MAX_ATTEMPTS = 2
    receiver.answer(Answer(503), Answer(204, delay=1.0))

    call = waiting_call()

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (Status.FAILED, 2)
    assert delivery.last_status_code is None
    assert delivery.last_error == "no answer within 0.5 s"
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL


def test_a_refusal_other_than_408_429_or_5xx_is_final(receiver, endpoint, waiting_call):
    receiver.answer(Answer(400))

    waiting_call()

    assert len(receiver.received) == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == (Status.FAILED, 400)
    assert delivery.last_error == "HTTP 400:"


def test_a_refusal_whose_body_holds_a_nul_is_recorded_as_one_try(receiver, endpoint, waiting_call):
    # PostgreSQL stores no NUL in text: the try's UPDATE failed, uncounted, and the sweep
    # would have sent it again and again.
    receiver.answer(Answer(400, body=b"ab\x00cd"))

    waiting_call()

    assert len(receiver.received) == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        Status.FAILED,
        1,
        400,
    )
    assert delivery.last_error == "HTTP 400: ab\ufffdcd"


def test_retries_back_off_exponentially_and_honour_retry_after(
    receiver, endpoint, waiting_call, settings
):
    settings.AGENTDASH_WEBHOOK_BACKOFF_SECONDS = 30
    receiver.answer(Answer(500))

    waiting_call()

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (Status.PENDING, 1)
    assert len(receiver.received) == 1, "the retry is not due yet"
    wait = delivery.next_attempt_at - delivery.updated_at
    assert dt.timedelta(seconds=29) < wait <= dt.timedelta(seconds=30)
    retry = DBTaskResult.objects.get(task_path="agentdash.notifications.deliver", status="READY")
    assert retry.run_after == delivery.next_attempt_at
    assert notifications.backoff(3) == dt.timedelta(seconds=120)
    assert notifications.backoff(30) == dt.timedelta(hours=1), "capped"


def test_a_retry_after_longer_than_the_backoff_is_honoured(
    receiver, endpoint, waiting_call, settings
):
    settings.AGENTDASH_WEBHOOK_BACKOFF_SECONDS = 30
    receiver.answer(Answer(429, headers=(("Retry-After", "600"),)))

    waiting_call()

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == (Status.PENDING, 429)
    wait = delivery.next_attempt_at - delivery.updated_at
    assert dt.timedelta(seconds=599) < wait <= dt.timedelta(seconds=600)


def test_expiry_is_announced_to_the_endpoints_that_want_it(
    receiver, waiting_call, run_queued_steps
):
    WebhookEndpoint.objects.create(
        name="expiry only", url=receiver.url, secret=SECRET, events=["toolcall.expired"]
    )
    WebhookEndpoint.objects.create(name="switched off", url=receiver.url, active=False)
    call = waiting_call()
    assert receiver.received == [], "not subscribed to pending_approval"

    transition(call, CallState.EXPIRED, actor="system")
    run_queued_steps()

    [request] = receiver.received
    assert request.headers["x-agentdash-event"] == "toolcall.expired"
    assert request.payload["tool_call"]["id"] == call.pk
    assert request.signature_valid


def test_nothing_is_sent_to_an_endpoint_switched_off_meanwhile(
    receiver, endpoint, waiting_call, run_queued_steps, settings
):
    settings.AGENTDASH_WEBHOOK_BACKOFF_SECONDS = 60
    receiver.answer(Answer(500))
    waiting_call()
    endpoint.active = False
    endpoint.save()
    # The retry is long overdue, its task lost: the sweep queues it again.
    long_ago = timezone.now() - dt.timedelta(minutes=5)
    WebhookDelivery.objects.update(next_attempt_at=long_ago, updated_at=long_ago)
    DBTaskResult.objects.all().delete()
    assert notifications.sweep_deliveries() == 1

    run_queued_steps()

    assert len(receiver.received) == 1, "only the try made while it was on"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        Status.FAILED,
        1,
        "the endpoint was switched off",
    )
    assert notifications.sweep_deliveries() == 0


def test_nothing_is_sent_for_a_change_that_rolls_back(receiver, endpoint, waiting_call):
    call = waiting_call()
    receiver.received.clear()

    def expire_then_fail() -> None:
        with transaction.atomic():
            transition(call, CallState.EXPIRED, actor="system")
            raise RuntimeError("the caller failed after the transition")

    with pytest.raises(RuntimeError):
        expire_then_fail()

    assert WebhookDelivery.objects.filter(event="toolcall.expired").count() == 0


def test_an_unreachable_receiver_never_holds_up_the_session(endpoint, waiting_call, settings):
    endpoint.url = "http://127.0.0.1:9/down"  # nothing listens on the discard port
    endpoint.save()

    call = waiting_call()

    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL
    assert AgentSession.objects.get(pk=call.session_id).status == SessionStatus.WAITING_APPROVAL
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (Status.FAILED, 3)
    assert delivery.last_error.startswith("ConnectError")


def test_an_operator_can_send_a_failed_delivery_again(
    receiver, endpoint, waiting_call, run_queued_steps
):
    receiver.answer(Answer(400))
    waiting_call()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == Status.FAILED

    assert notifications.send_again(delivery)
    assert not notifications.send_again(delivery), "already pending again"
    run_queued_steps()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(receiver.received)) == (Status.DELIVERED, 1, 2)


# --- the receiver's check, as documented ------------------------------------------------


def test_verify_signature_accepts_exactly_the_signed_body_recently_signed_and_never_raises():
    body, now = b'{"event":"toolcall.pending_approval"}', time.time()
    stamp = str(int(now))
    header = "sha256=" + hmac.new(b"k", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert notifications.signature("k", stamp, body) == header

    def check(**changes: object) -> bool:
        given = {"body": body, "timestamp": stamp, "signature_header": header, "now": now}
        return notifications.verify_signature("k", **(given | changes))

    assert check()
    assert not check(body=body + b" ")
    assert not check(signature_header=header.replace("sha256=", "sha256=0"))
    assert not check(now=now + 301), "a replay five minutes later"
    assert not check(timestamp="yesterday")
    # Whatever a forger sends, or leaves out, is a no, not an exception.
    assert not check(signature_header="sha256=" + "é" * 64)
    assert not check(signature_header=header + "\udcff")  # a byte decoded surrogateescape
    assert not check(signature_header=None)
    assert not check(timestamp=None)
    assert not check(timestamp="")
    assert not check(timestamp="1" * 5000)  # int() refuses past 4,300 digits
    assert not notifications.verify_signature(
        "other", body=body, timestamp=stamp, signature_header=header, now=now
    )


def test_the_backoff_doubles_from_the_configured_wait(settings):
    settings.AGENTDASH_WEBHOOK_BACKOFF_SECONDS = 10

    assert [notifications.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 40, 80]


def test_a_try_lost_with_its_worker_is_queued_again_by_the_sweep(receiver, endpoint, waiting_call):
    call = waiting_call()
    # As a worker that died mid-POST leaves it: pending, its task gone (or "running"
    # for good), nobody to try it again.
    delivery = WebhookDelivery.objects.get()
    long_ago = timezone.now() - dt.timedelta(minutes=5)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=Status.PENDING, attempts=1, next_attempt_at=long_ago, updated_at=long_ago
    )
    DBTaskResult.objects.all().delete()
    sent = len(receiver.received)

    assert notifications.sweep_deliveries() == 1
    assert notifications.sweep_deliveries() == 0  # the next sweep gives that try time
    worker.StepWorker().run_ready_steps()

    assert len(receiver.received) == sent + 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (Status.DELIVERED, 2)
    assert call.pk == delivery.payload["tool_call"]["id"]


def test_a_duplicate_task_does_not_cut_a_backoff_short(receiver, endpoint, waiting_call, settings):
    settings.AGENTDASH_WEBHOOK_BACKOFF_SECONDS = 60
    receiver.answer(Answer(500))
    waiting_call()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (Status.PENDING, 1)

    assert notifications.deliver.call(delivery.pk) == "not due"

    assert len(receiver.received) == 1
    delivery.refresh_from_db()
    assert delivery.attempts == 1
