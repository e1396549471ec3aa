"""Webhooks: tell a chat bot or a pager that a tool call waits for an operator, or that
nobody decided it in time, with a link to the approval queue.

    states.transition() ─► on_transition(call, new)        inside the change's transaction
          ─► (on commit) queue_event(event, call_id)         one WebhookDelivery per endpoint
          ─► deliver(delivery_id), a task                    one signed POST; retries itself

Nothing here can fail a transition: the event is queued only after the change has
committed (and a failure to queue is logged, not raised), and each POST runs later as
a task of its own; the worker's sweep queues again a try whose task was lost with a
worker that died (`sweep_deliveries`). A delivery is tried up to
AGENTDASH_WEBHOOK_MAX_ATTEMPTS times: again after a timeout, a connection error, 408,
429 or a 5xx, waiting AGENTDASH_WEBHOOK_BACKOFF_SECONDS, then twice that, and so on
(or longer, when a Retry-After asks for it); any other answer is final. A try gets
AGENTDASH_WEBHOOK_TIMEOUT_SECONDS in all, to connect, send and be answered: a
receiver that answers slowly holds the worker no longer than one that never answers.
Every try is recorded on the WebhookDelivery row (attempts, last status code or error,
next attempt, delivered at). Nothing is sent to an endpoint switched off meanwhile: its
pending deliveries fail, saying so.

What a receiver gets, and how it checks it
------------------------------------------
A POST with a JSON body (see `event_payload()`; the arguments are redacted like the
audit log's, since a chat channel is a wider audience than the dashboard, and
"delivery_id" is the delivery's id) and:

    X-Agentdash-Event:      toolcall.pending_approval | toolcall.expired
    X-Agentdash-Delivery:   the delivery's id, as in the body; a retry repeats it
    X-Agentdash-Timestamp:  when this try was signed, in Unix seconds
    X-Agentdash-Signature:  sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

To verify: compute the HMAC over the timestamp header, a ".", and the raw body bytes
exactly as received (not re-serialised JSON), compare it with the header in constant
time, and refuse a timestamp more than a few minutes from your clock, so that a
recorded request cannot be replayed later. `verify_signature()` does exactly that.
Then dedupe on the body's "delivery_id": a retry sends the same body, and unlike the
header it is signed, so a recorded request cannot pass for a new delivery.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx2
from django.conf import settings
from django.db import connection, models, transaction
from django.tasks import task
from django.urls import reverse
from django.utils import timezone

from agentdash import audit, worker
from agentdash.models import ToolCall, WebhookDelivery, WebhookEndpoint
from agentdash.models.webhooks import WEBHOOK_EVENTS

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Agentdash-Signature"
TIMESTAMP_HEADER = "X-Agentdash-Timestamp"
EVENT_HEADER = "X-Agentdash-Event"
DELIVERY_HEADER = "X-Agentdash-Delivery"
# How far a receiver should let a timestamp stray from its own clock.
DEFAULT_TOLERANCE_SECONDS = 300
# What is kept of a refusing receiver's answer, for the record.
ERROR_BODY_CHARS = 500
RETRYABLE_STATUS = frozenset({408, 425, 429})


# --- the trigger ------------------------------------------------------------------------


def on_transition(obj: models.Model, new: str) -> None:
    """Called by `states.transition()` once a change is audited, inside its transaction.

    Cheap for every other change: only a tool call entering a state that some webhook
    event names queues anything, and that only after the transaction commits.
    """
    event = f"toolcall.{new}"
    if isinstance(obj, ToolCall) and event in WEBHOOK_EVENTS:
        transaction.on_commit(functools.partial(queue_event, event, obj.pk), robust=True)


def queue_event(event: str, call_id: int) -> list[WebhookDelivery]:
    """Record one delivery of `event` for every endpoint that wants it and queue them."""
    if not _any_active_endpoint():
        return []  # the common case, asked at every pause: answered in plain SQL
    endpoints = WebhookEndpoint.subscribed_to(event)
    if not endpoints:
        return []
    call = ToolCall.objects.select_related("session").get(pk=call_id)
    payload = event_payload(event, call)
    now = timezone.now()
    with transaction.atomic():
        deliveries = [
            WebhookDelivery.objects.create(
                endpoint=endpoint, event=event, payload=payload, next_attempt_at=now
            )
            for endpoint in endpoints
        ]
        _enqueue(*deliveries)
    return deliveries


def _any_active_endpoint() -> bool:
    """Whether any endpoint is active. Plain SQL: on SQLite the ORM's query costs ten
    times what running it does, and most installations have no webhook at all."""
    with connection.cursor() as cursor:
        cursor.execute(_ANY_ACTIVE_SQL, [True])
        return cursor.fetchone() is not None


# S608: the table's name comes from the model, never from input.
_ANY_ACTIVE_SQL = f'SELECT 1 FROM "{WebhookEndpoint._meta.db_table}" WHERE "active" = %s LIMIT 1'  # noqa: S608


def send_again(delivery: WebhookDelivery) -> bool:
    """Start a fresh round of tries for a finished delivery (an operator's choice, in the
    admin, e.g. once a receiver that was down for long is back). False: still pending."""
    now = timezone.now()
    with transaction.atomic():
        restarted = WebhookDelivery.objects.filter(
            pk=delivery.pk,
            status__in=[WebhookDelivery.Status.DELIVERED, WebhookDelivery.Status.FAILED],
        ).update(
            status=WebhookDelivery.Status.PENDING,
            attempts=0,
            next_attempt_at=now,
            delivered_at=None,
            updated_at=now,
        )
        if restarted:
            _enqueue(delivery)
    return bool(restarted)


SWEEP_BATCH = 500  # a backlog is worked off over a few sweeps, not in one transaction


def sweep_deliveries() -> int:
    """Queue a try of every pending delivery whose try is long overdue: its task was lost
    with a worker that died mid-POST (django-tasks-db never runs a task twice), or never
    ran. Returns how many. Called by the worker's sweep.

    Delivery is at least once, as with any retry: when the queue lags by more than the
    grace, the lost task and its copy may both POST (`deliver` never counts a try twice
    nor cuts a backoff short, and receivers dedupe on the body's delivery_id)."""
    now = timezone.now()
    grace = timedelta(
        seconds=max(
            settings.AGENTDASH_SWEEP_SECONDS, 3 * settings.AGENTDASH_WEBHOOK_TIMEOUT_SECONDS
        )
    )
    with transaction.atomic():
        overdue = list(
            WebhookDelivery.objects.select_for_update()
            .filter(
                status=WebhookDelivery.Status.PENDING,
                next_attempt_at__lte=now - grace,
                updated_at__lte=now - grace,  # nobody tried it meanwhile
            )
            .order_by("pk")[:SWEEP_BATCH]
        )
        if overdue:
            # Touched, so that the next sweep gives the new task its grace too.
            WebhookDelivery.objects.filter(pk__in=[d.pk for d in overdue]).update(updated_at=now)
            _enqueue(*overdue)
    if overdue:
        logger.warning("re-queued %d overdue webhook deliveries", len(overdue))
    return len(overdue)


def _enqueue(*deliveries: WebhookDelivery) -> None:
    """Queue a try of each delivery, in the caller's transaction; wake a worker on commit."""
    for delivery in deliveries:
        deliver.enqueue(delivery.pk)
    worker.notify_other_processes()
    transaction.on_commit(worker.wake)


def _public_url(path: str) -> str:
    return f"{settings.AGENTDASH_PUBLIC_URL}{path}"


def event_payload(event: str, call: ToolCall) -> dict[str, Any]:
    """The JSON body of a webhook: what the call is, and where an operator decides it."""
    session = call.session
    arguments = call.arguments if call.arguments is not None else call.proposed_arguments
    return {
        "event": event,
        "occurred_at": call.updated_at.isoformat(),
        "tool_call": {
            "id": call.pk,
            "tool": call.tool_name,
            "arguments": audit.redact(arguments),
            "approval_reason": call.approval_reason,
            "url": _public_url(reverse("api-v1:call", args=[call.pk])),
        },
        "session": {
            "id": session.pk,
            "goal": session.goal,
            "url": _public_url(reverse("session-detail", args=[session.pk])),
        },
        "approval_queue_url": _public_url(reverse("approvals") + f"#queue-card-{call.pk}"),
    }


# --- signing ----------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Agentdash-Signature value for `body` signed at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str,
    *,
    body: bytes,
    timestamp: str | None,
    signature_header: str | None,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """A receiver's check: the signature matches and the timestamp is recent. False, never
    an exception, for whatever a sender put in the headers or left out (None)."""
    # A few ASCII digits only: int() would also take " 12", "+12", "1_2" and other
    # scripts' digits, none of which we send, and raises past 4,300 digits.
    digits = timestamp and len(timestamp) <= 15 and timestamp.isascii() and timestamp.isdigit()
    if not digits or not signature_header:
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_seconds:
        return False
    # As bytes: compare_digest raises on a str with non-ASCII characters, which a forged
    # header may hold (surrogatepass: even one decoded with errors="surrogateescape").
    expected = signature(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature_header.encode(errors="surrogatepass"))


def _body(delivery: WebhookDelivery) -> bytes:
    """What a try sends: the payload and, signed with it, the delivery id that receivers
    dedupe on. The same bytes on every try of a delivery."""
    body = {"delivery_id": delivery.pk} | delivery.payload
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# --- delivery ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TryOutcome:
    """How one POST went."""

    status_code: int | None  # None: no answer (timeout, refused connection, ...)
    error: str  # "" when delivered
    retryable: bool
    retry_after: float | None = None  # seconds, when the receiver asked for a pause

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _post(delivery: WebhookDelivery, body: bytes) -> TryOutcome:
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "agentdash-webhooks",
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.pk),
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(delivery.endpoint.secret, timestamp, body),
    }
    timeout = settings.AGENTDASH_WEBHOOK_TIMEOUT_SECONDS
    try:
        return _run_without_waiting(_post_within(timeout, delivery.endpoint.url, body, headers))
    except TimeoutError:
        return TryOutcome(None, f"no answer within {timeout:g} s", retryable=True)
    except (httpx2.InvalidURL, httpx2.UnsupportedProtocol) as error:
        return TryOutcome(None, f"the endpoint's URL cannot be used: {error}", retryable=False)
    except httpx2.HTTPError as error:  # refused, reset, unreachable: worth another try
        return TryOutcome(None, f"{type(error).__name__}: {error}", retryable=True)


def _run_without_waiting(coroutine: Coroutine[Any, Any, TryOutcome]) -> TryOutcome:
    """Run `coroutine` on an event loop of its own (the task runs in a plain worker
    thread), and close the loop without waiting for its executor: asyncio.run() would wait
    there for a name lookup that outlived the timeout (anyio resolves in a thread), up to
    the resolver's own patience. Such a thread ends on its own, unwaited for."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()  # shuts its executor down with wait=False


async def _post_within(
    seconds: float, url: str, body: bytes, headers: dict[str, str]
) -> TryOutcome:
    """POST `body` to `url`, all of it (connecting, sending, the answer's head and what is
    kept of its body) within `seconds`, else TimeoutError. httpx's own timeouts bound each
    read, not the whole: a receiver dripping its answer a line at a time would hold the
    worker, and every session it runs, for as long as it liked."""
    async with asyncio.timeout(seconds):
        # No redirects: a signed event goes where it was configured to go, or fails.
        async with (
            httpx2.AsyncClient(timeout=None, follow_redirects=False) as client,
            client.stream("POST", url, content=body, headers=headers) as answer,
        ):
            status = answer.status_code
            if 200 <= status < 300:
                return TryOutcome(status, "", retryable=False)
            # Only the start of a refusal is kept, however much the receiver sends.
            start = await anext(answer.aiter_bytes(ERROR_BODY_CHARS), b"")
            return TryOutcome(
                status,
                f"HTTP {status}: {start[:ERROR_BODY_CHARS].decode(errors='replace')}".strip(),
                retryable=status >= 500 or status in RETRYABLE_STATUS,
                retry_after=_seconds(answer.headers.get("Retry-After")),
            )


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After given in seconds; the HTTP-date form is left to the backoff."""
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None


def backoff(attempts: int, retry_after: float | None = None) -> timedelta:
    """How long to wait after `attempts` failed tries before the next one."""
    base = settings.AGENTDASH_WEBHOOK_BACKOFF_SECONDS * 2 ** (attempts - 1)
    wait = max(base, retry_after or 0.0)
    return timedelta(seconds=min(wait, settings.AGENTDASH_WEBHOOK_BACKOFF_MAX_SECONDS))


@task()
def deliver(delivery_id: int) -> str:
    """Try one delivery once; on a retryable failure, queue the next try. Idempotent:
    a delivery that is no longer pending is left alone."""
    delivery = (
        WebhookDelivery.objects.select_related("endpoint")
        .filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
        .first()
    )
    if delivery is None:
        return "not pending"
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > timezone.now():
        return "not due"  # a duplicate task (see sweep_deliveries): the backoff stands
    if not delivery.endpoint.active:
        return _fail_switched_off(delivery)
    outcome = _post(delivery, _body(delivery))
    attempts = delivery.attempts + 1
    now = timezone.now()
    fields: dict[str, Any] = {
        "attempts": attempts,
        "last_status_code": outcome.status_code,
        # A receiver's answer may hold what the database cannot store (PostgreSQL: NUL),
        # and a failed UPDATE would leave the try uncounted, for the sweep to send again.
        "last_error": audit.storable_text(outcome.error),
        "updated_at": now,
    }
    next_attempt: datetime | None = None
    if outcome.delivered:
        fields |= {"status": WebhookDelivery.Status.DELIVERED, "delivered_at": now}
    elif outcome.retryable and attempts < settings.AGENTDASH_WEBHOOK_MAX_ATTEMPTS:
        next_attempt = now + backoff(attempts, outcome.retry_after)
    else:
        fields["status"] = WebhookDelivery.Status.FAILED
    with transaction.atomic():
        # Conditional on the attempt count read above, so that a duplicate task that
        # raced this one can neither count a try twice nor queue a second retry.
        claimed = WebhookDelivery.objects.filter(
            pk=delivery.pk, status=WebhookDelivery.Status.PENDING, attempts=delivery.attempts
        ).update(next_attempt_at=next_attempt, **fields)
        if claimed and next_attempt is not None:
            deliver.using(run_after=next_attempt).enqueue(delivery.pk)
    status = fields.get("status", "retrying")
    log = logger.info if outcome.delivered else logger.warning
    log(
        "webhook %s (%s) to %s, try %d: %s",
        delivery.pk,
        delivery.event,
        delivery.endpoint.name,
        attempts,
        outcome.error or f"HTTP {outcome.status_code}",
    )
    return str(status)


def _fail_switched_off(delivery: WebhookDelivery) -> str:
    """Give up a delivery whose endpoint was switched off after the event was queued: the
    operator wants nothing sent there. Not a try: the attempts stay as they were."""
    WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.PENDING).update(
        status=WebhookDelivery.Status.FAILED,
        last_error="the endpoint was switched off",
        next_attempt_at=None,
        updated_at=timezone.now(),
    )
    logger.info(
        "webhook %s (%s) to %s: not sent, the endpoint was switched off",
        delivery.pk,
        delivery.event,
        delivery.endpoint.name,
    )
    return str(WebhookDelivery.Status.FAILED)
