"""The sessions list, the start form, a session's page, and cancelling a session.

Page contract (for the browser tests; every id below is stable):
  /sessions/             table#sessions-table > tbody#session-rows > tr#session-row-<id>
                         [data-testid=session-row][data-status]; live over /ws/sessions/.
  /sessions/new/         form#start-form: goal, provider (radios), model, tools
                         (checkboxes), max_steps, max_tokens, max_cost, system_prompt,
                         script; each field's errors in p[data-testid=error-<field>].
  /sessions/<id>/        section#session-header-<id> ([data-status], [data-finished]
                         once ended), form#cancel-form > button[data-testid=cancel-session]
                         (asks to confirm), div#transcript > article#message-<id> >
                         article#call-<id> [data-state], div#stream-<id> (the reply being
                         written); live over /ws/sessions/<id>/.
  Everywhere             #notices holds [data-testid=notice][data-level] messages;
                         #live-status[data-state] is "live" once a socket's snapshot is in.
Login is required by LoginRequiredMiddleware, as on every page.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agentdash.approvals import DECIDE_PERMISSION
from agentdash.live import routing
from agentdash.models import AgentSession
from agentdash.sessions import cancel_session, start_session
from agentdash.states import IllegalTransition
from agentdash.web import display, notices
from agentdash.web.forms import StartSessionForm


def can_cancel(user: AbstractBaseUser | AnonymousUser, session: AgentSession) -> bool:
    """The session's owner may stop it, and so may anyone who may decide its calls."""
    return (session.owner_id is not None and session.owner_id == user.pk) or user.has_perm(
        DECIDE_PERMISSION
    )


@require_GET
def session_list(request: HttpRequest) -> HttpResponse:
    context = {
        "rows": display.session_rows(),
        "limit": display.SESSION_LIST_LIMIT,
        "live_url": routing.SESSIONS_PATH,
    }
    return render(request, "agentdash/sessions/list.html", context)


@require_http_methods(["GET", "POST"])
def start(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return render(request, "agentdash/sessions/new.html", {"form": StartSessionForm()})
    form = StartSessionForm(request.POST)
    if not form.is_valid():
        return render(request, "agentdash/sessions/new.html", {"form": form}, status=400)
    data = form.cleaned_data
    try:
        session = start_session(
            goal=data["goal"],
            owner=request.user,
            provider=data["provider"],
            model=data["model"],
            script=data["script"],
            enabled_tools=data["tools"],
            system_prompt=data["system_prompt"],
            max_steps=data["max_steps"],
            max_tokens=data["max_tokens"],
            max_cost=data["max_cost"],
        )
    except ValueError as refusal:  # what changed since the form checked it (a key removed)
        form.add_error(None, str(refusal))
        return render(request, "agentdash/sessions/new.html", {"form": form}, status=400)
    return redirect("session-detail", session_id=session.pk)


@require_GET
def detail(request: HttpRequest, session_id: int) -> HttpResponse:
    return session_page(request, session_id)


def session_page(request: HttpRequest, session_id: int, *, status: int = 200) -> HttpResponse:
    """The session's page; a refused action answers with it too, and its notice."""
    summary = display.session_summary(session_id)
    if summary is None:
        raise Http404(f"There is no session {session_id}.")
    context = {
        "summary": summary,
        "entries": display.transcript(summary.session),
        "session_id": session_id,
        "can_decide": request.user.has_perm(DECIDE_PERMISSION),
        "can_cancel": can_cancel(request.user, summary.session),
        "live_url": routing.session_path(session_id),
    }
    return render(request, "agentdash/sessions/detail.html", context, status=status)


@require_POST
def cancel(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_object_or_404(AgentSession, pk=session_id)
    text, level, status = _cancel(request.user, session)
    if not request.htmx:
        notices.remember(request, text, level)
        if status != 200:
            return session_page(request, session.pk, status=status)
        return redirect("session-detail", session_id=session.pk)
    summary = display.session_summary(session.pk)
    header = render_to_string(
        "agentdash/partials/session_header.html", {"summary": summary, "oob": True}
    )
    return notices.htmx_response(text, level, status=status, also=header)


def _cancel(
    user: AbstractBaseUser | AnonymousUser, session: AgentSession
) -> tuple[str, notices.Level, int]:
    """Cancel the session if `user` may: what to tell them, and the HTTP status."""
    if not can_cancel(user, session):
        return (
            f"Only the session's owner or an operator who may approve tool calls can cancel "
            f"session {session.pk}.",
            "error",
            403,
        )
    try:
        cancel_session(session, user=user)
    except IllegalTransition:
        session.refresh_from_db()
        return (
            f"Session {session.pk} has already ended ({session.get_status_display()}).",
            "error",
            409,
        )
    return f"Cancelled session {session.pk}.", "success", 200
