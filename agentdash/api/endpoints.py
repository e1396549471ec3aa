"""The HTTP JSON API, /api/v1/: thin views over the same services as the browser and CLI.

Every operation needs `Authorization: Bearer <token>` (see agentdash/api/auth.py) and
acts as the token's user, with that user's permissions. Errors are JSON with a
`detail`: 400 unparsable body, 401 no or bad token, 403 not allowed, 404 no such
thing, 409 it moved on (the body says who moved it), 422 invalid input with `errors`
naming each field, 429 too many bad tokens from this address (Retry-After says for
how many seconds).
"""

from __future__ import annotations

from typing import Any, Literal

from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from ninja import NinjaAPI, P, Path, Query, Status, Swagger
from ninja.errors import AuthenticationError, ValidationError
from ninja.operation import Operation

from agentdash import approvals
from agentdash.api import schemas as s
from agentdash.api.auth import UNAUTHENTICATED, ApiTokenAuth, TooManyFailedTokens
from agentdash.models import AgentSession, ExecutionResult, ToolCall
from agentdash.sessions import cancel_session, start_session
from agentdash.states import IllegalTransition
from agentdash.web import display
from agentdash.web.history import export_response
from agentdash.web.history_query import HistoryFilterForm, page_of
from agentdash.web.session_pages import can_cancel


class AgentdashAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation: Operation) -> str:
        # "decide_call", not ninja's default "agentdash_api_endpoints_decide_call".
        return operation.view_func.__name__


api = AgentdashAPI(
    title="agentdash API",
    version="1",
    description=__doc__ or "",
    urls_namespace="api-v1",
    auth=ApiTokenAuth(),
    # Swagger UI from ninja's own static files (it is an installed app), and no
    # validator badge, which would send the schema to an outside service.
    docs=Swagger(settings={"validatorUrl": None}),
)

# The error answers each kind of operation can give, for the schema.
READ: dict[int, Any] = {401: s.ErrorOut, 422: s.ValidationErrorOut, 429: s.ErrorOut}
ONE: dict[int, Any] = {**READ, 404: s.ErrorOut}
WRITE: dict[int, Any] = {**ONE, 400: s.ErrorOut, 403: s.ErrorOut, 409: s.ConflictOut}

SessionId = Path[s.Id, P(description="A session's id.")]
CallId = Path[s.Id, P(description="A tool call's id (not the model's call_id).")]


# --- errors -----------------------------------------------------------------------------


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, error: AuthenticationError) -> HttpResponse:
    detail = UNAUTHENTICATED if error.message == "Unauthorized" else error.message
    response = api.create_response(request, {"detail": detail}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="agentdash"'
    return response


@api.exception_handler(TooManyFailedTokens)
def _too_many_failed_tokens(request: HttpRequest, error: TooManyFailedTokens) -> HttpResponse:
    response = api.create_response(request, {"detail": error.message}, status=429)
    response["Retry-After"] = str(error.retry_after)
    return response


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, error: PermissionDenied) -> HttpResponse:
    return api.create_response(request, {"detail": str(error) or "Forbidden."}, status=403)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, error: Http404) -> HttpResponse:
    return api.create_response(request, {"detail": str(error) or "Not found."}, status=404)


def _field(location: tuple[Any, ...]) -> str:
    # ninja nests a request body under the view's parameter, always named `body` here:
    # the client knows it as "body.goal", not "body.body.goal".
    if location[:2] == ("body", "body"):
        location = location[1:]
    return ".".join(str(part) for part in location)


def _message(item: dict[str, Any]) -> str:
    # A validator's own words, without Pydantic's "Value error, " in front.
    if item.get("type") == "value_error" and "error" in item.get("ctx", {}):
        return str(item["ctx"]["error"])
    return item["msg"]


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, error: ValidationError) -> HttpResponse:
    errors = [
        s.FieldErrorOut(field=_field(tuple(item["loc"])), message=_message(item))
        for item in error.errors
    ]
    body = s.ValidationErrorOut(detail="The request is not valid.", errors=errors)
    return api.create_response(request, body, status=422)


def _form_errors(form: HistoryFilterForm) -> ValidationError:
    """A filter form's errors as the API's 422, each under the query parameter it names."""
    return ValidationError(
        [
            {"loc": ("query",) if name == "__all__" else ("query", name), "msg": message}
            for name, messages in form.errors.items()
            for message in messages
        ]
    )


# --- sessions ---------------------------------------------------------------------------


def _calls() -> QuerySet[ToolCall]:
    return ToolCall.objects.order_by("message__index", "position").prefetch_related(
        "decisions",
        Prefetch("results", queryset=ExecutionResult.objects.order_by("attempt")),
    )


def _session(session_id: int) -> AgentSession:
    session = AgentSession.objects.select_related("owner").filter(pk=session_id).first()
    if session is None:
        raise Http404(f"There is no session {session_id}.")
    return session


@api.post("/sessions", response={201: s.SessionOut, **WRITE}, tags=["sessions"])
def create_session(request: HttpRequest, body: s.SessionStartIn) -> Status:
    """Start a session: its first step is queued at once."""
    try:
        session = start_session(
            goal=body.goal,
            owner=request.user,
            provider=body.provider,
            model=body.model,
            script=body.script,
            enabled_tools=body.tools,
            system_prompt=body.system_prompt,
            max_steps=body.max_steps,
            max_tokens=body.max_tokens,
            max_cost=body.max_cost,
        )
    except ValueError as refusal:  # what changed since the schema checked it (a key removed)
        return Status(422, s.ValidationErrorOut(detail=str(refusal), errors=[]))
    return Status(201, _session(session.pk))


@api.get("/sessions", response={200: s.SessionPageOut, **READ}, tags=["sessions"])
def list_sessions(request: HttpRequest, query: Query[s.SessionQuery]) -> s.SessionPageOut:
    """Sessions, newest first, a page at a time (keyset on id: pages never shift)."""
    rows = AgentSession.objects.select_related("owner").order_by("-pk")
    if query.status is not None:
        rows = rows.filter(status=query.status)
    if query.before is not None:
        rows = rows.filter(pk__lt=query.before)
    page = list(rows[: query.limit + 1])
    more = len(page) > query.limit
    page = page[: query.limit]
    return s.SessionPageOut(items=page, next_before=page[-1].pk if more else None)


@api.get("/sessions/{session_id}", response={200: s.SessionDetailOut, **ONE}, tags=["sessions"])
def read_session(request: HttpRequest, session_id: SessionId) -> AgentSession:
    """A session with all its tool calls, their decisions and latest results."""
    found = (
        AgentSession.objects.select_related("owner")
        .prefetch_related(Prefetch("tool_calls", queryset=_calls()))
        .filter(pk=session_id)
        .first()
    )
    if found is None:
        raise Http404(f"There is no session {session_id}.")
    return found


@api.post("/sessions/{session_id}/cancel", response={200: s.SessionOut, **WRITE}, tags=["sessions"])
def stop_session(request: HttpRequest, session_id: SessionId) -> AgentSession | Status:
    """Stop a session now; its pending calls are rejected. Its owner, or an operator who
    may decide calls, may do this."""
    found = _session(session_id)
    if not can_cancel(request.user, found):
        raise PermissionDenied(
            "Only the session's owner or an operator who may approve tool calls can cancel "
            f"session {found.pk}."
        )
    try:
        cancel_session(found, user=request.user)
    except IllegalTransition:
        found.refresh_from_db()
        return Status(
            409,
            s.ConflictOut(
                detail=f"Session {found.pk} has already ended ({found.status}).",
                state=found.status,
            ),
        )
    return _session(found.pk)


# --- approvals --------------------------------------------------------------------------


@api.get("/approvals", response={200: list[s.PendingCallOut], **READ}, tags=["approvals"])
def list_approvals(request: HttpRequest) -> list[s.PendingCallOut]:
    """Every call waiting for an operator, oldest first, as the approval queue shows it."""
    return [
        s.PendingCallOut(
            id=card.pk,
            session_id=card.session.pk,
            session_goal=card.session.goal,
            tool=card.call.tool_name,
            tool_description=card.description,
            arguments=card.call.arguments,
            arguments_hash=card.call.arguments_hash,
            approval_reason=card.call.approval_reason,
            preview=card.preview,
            approvals_required=card.call.approvals_required,
            approvals_given=card.call.approvals_given(),
            proposed_at=card.call.proposed_at,
            expires_at=card.call.expires_at,
        )
        for card in display.pending_cards()
    ]


def _call(call_id: int) -> ToolCall:
    call = _calls().filter(pk=call_id).first()
    if call is None:
        raise Http404(f"There is no tool call {call_id}.")
    return call


@api.get("/calls/{call_id}", response={200: s.CallOut, **ONE}, url_name="call", tags=["approvals"])
def read_call(request: HttpRequest, call_id: CallId) -> ToolCall:
    """One tool call: what runs, why it waited, what was decided and what came of it."""
    return _call(call_id)


@api.post("/calls/{call_id}/decision", response={200: s.CallOut, **WRITE}, tags=["approvals"])
def decide_call(request: HttpRequest, call_id: CallId, body: s.DecisionIn) -> ToolCall | Status:
    """Approve (optionally with edited arguments) or reject a pending call.

    Needs the agentdash.decide_toolcall permission, and whatever the call's rule asks
    (a group, four eyes): 403 otherwise. When someone decided first, 409 says who and
    when; 409 too when the arguments no longer hash to the expected_hash sent. Edited
    arguments that the tool's schema refuses give 422 with one error per field. In
    every refusal nothing is decided. A call that needs two approvals stays
    pending_approval after the first.
    """
    try:
        approvals.decide(
            call_id,
            user=request.user,
            approve=body.decision == "approve",
            reason=body.reason,
            edited_arguments=body.arguments,
            expected_hash=body.expected_hash,
            allow_for_session=body.allow_for_session,
        )
    except ToolCall.DoesNotExist:
        raise Http404(f"There is no tool call {call_id}.") from None
    except approvals.AlreadyDecided as late:
        decision = late.decision
        return Status(
            409,
            s.ConflictOut(
                detail=str(late),
                state=late.call.state,
                decided_by=decision.actor if decision else None,
                decided_at=decision.created_at if decision else None,
                approved=decision.approved if decision else None,
            ),
        )
    except approvals.ArgumentsChanged as changed:
        return Status(409, s.ConflictOut(detail=str(changed), state=changed.call.state))
    except approvals.InvalidEdit as refusal:
        errors = [
            s.FieldErrorOut(
                field=f"arguments.{error['field']}".rstrip("."), message=error["message"]
            )
            for error in refusal.errors
        ] or [s.FieldErrorOut(field="arguments", message=str(refusal))]
        return Status(422, s.ValidationErrorOut(detail=str(refusal), errors=errors))
    return _call(call_id)


# --- the audit log ----------------------------------------------------------------------


def _history_form(filters: s.AuditFilters, **cursor: int | None) -> HistoryFilterForm:
    """The audit history page's own filters, fed from the API's query, validated."""
    values = {**filters.model_dump(), **cursor}
    data = {
        name: value.isoformat() if hasattr(value, "isoformat") else str(value)
        for name, value in values.items()
        if value is not None
    }
    form = HistoryFilterForm(data)
    if not form.is_valid():
        raise _form_errors(form)
    return form


@api.get("/audit", response={200: s.AuditPageOut, **READ}, tags=["audit"])
def list_audit_events(request: HttpRequest, query: Query[s.AuditQuery]) -> s.AuditPageOut:
    """Audit events, newest first, filtered; keyset pages on seq (`before` / `after`)."""
    filters = s.AuditFilters(**query.model_dump(include=set(s.AuditFilters.model_fields)))
    form = _history_form(filters, before=query.before, after=query.after)
    page = page_of(
        form.events(),
        before=form.cleaned_data["before"],
        after=form.cleaned_data["after"],
        size=query.limit,
    )
    return s.AuditPageOut(
        items=page.events, newer_after=page.newer_after, older_before=page.older_before
    )


# Keyed 200 as `response=` is, so that ninja merges this into that entry: a "200" beside it
# was a second key of the same name in the JSON, which Swagger UI refused to render.
EXPORT_RESPONSE = {
    200: {
        "description": "Every selected event in seq order, streamed; verifiable offline "
        "(see the hash chain in agentdash/audit.py).",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


@api.get(
    "/audit/export",
    response={200: None, **READ},
    openapi_extra={"responses": EXPORT_RESPONSE},
    tags=["audit"],
)
def export_audit(
    request: HttpRequest,
    format: Query[Literal["jsonl", "csv"]],
    filters: Query[s.AuditFilters],
) -> HttpResponseBase:
    """The filtered audit log as JSONL or CSV, streamed in constant memory."""
    return export_response(request, _history_form(filters).events(), format)
