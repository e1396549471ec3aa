"""The approval queue and the decision endpoint behind every card's buttons.

Page contract (for the browser tests; every id below is stable):
  /approvals/            div#queue-list > article#queue-card-<call> [data-testid=queue-card]
                         [data-call-id][tabindex=0], oldest first; #queue-count; live over
                         /ws/approvals/. A card shows [data-testid=session-goal],
                         [data-testid=tool-description], [data-testid=approval-reason],
                         pre[data-testid=call-arguments] (exactly what will run) and, where
                         the tool has one, pre[data-testid=call-preview]. Operators who may
                         decide also get button[data-testid=approve],
                         details > summary[data-testid=edit] with
                         textarea[data-testid=edit-arguments] and
                         button[data-testid=approve-edited],
                         details > summary[data-testid=reject-open] with
                         input[data-testid=reject-reason] and button[data-testid=reject],
                         and div#decision-errors-<call> for refused edits. Others get
                         p[data-testid=readonly-note] instead.
                         Keys (static/agentdash/dashboard.js): j/k move, a approve, e edit,
                         r reject, Enter confirms, Ctrl+Enter confirms an edit, Esc backs out.
  POST /calls/<call>/decide/   action=approve|edit|reject, arguments (JSON, for edit),
                         reason, card=queue|session (which card to answer with).
                         200 decided; 409 someone decided first (the notice names who and
                         when); 422 the edit was refused (errors per field); 403; 404.
                         To htmx it answers with a notice for #notices and the card's
                         out-of-band update (the queue card deleted, the session card
                         replaced); to a plain form, with a redirect or the page (4xx).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agentdash.approvals import DECIDE_PERMISSION, AlreadyDecided, InvalidEdit, decide
from agentdash.live import fragments, routing
from agentdash.models import ToolCall
from agentdash.web import display, notices
from agentdash.web.display import CallCard
from agentdash.web.forms import DecisionForm
from agentdash.web.session_pages import session_page


@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    return queue_page(request)


def queue_page(request: HttpRequest, *, status: int = 200) -> HttpResponse:
    """The queue; a refused decision answers with it too, and its notice."""
    context = {
        "cards": display.pending_cards(),
        "can_decide": request.user.has_perm(DECIDE_PERMISSION),
        "live_url": routing.APPROVALS_PATH,
    }
    return render(request, "agentdash/approvals/queue.html", context, status=status)


@require_POST
def decide_call(request: HttpRequest, call_id: int) -> HttpResponse:
    if not request.user.has_perm(DECIDE_PERMISSION):
        text = f"{request.user.get_username()} may not approve or reject tool calls."
        return _refused(request, text, status=403)
    form = DecisionForm(request.POST)
    if form.is_valid():
        try:
            decision = decide(
                call_id,
                user=request.user,
                approve=form.approve,
                reason=form.cleaned_data["reason"],
                edited_arguments=form.edited_arguments,
            )
        except ToolCall.DoesNotExist:
            return _refused(request, f"There is no call {call_id}.", status=404)
        except AlreadyDecided as late:
            return _answered(request, form, call_id, str(late), "error", status=409)
        except PermissionDenied as refusal:  # the permission was withdrawn meanwhile
            return _refused(request, str(refusal), status=403)
        except InvalidEdit as refusal:
            form.add_edit_errors(refusal)
        else:
            verb = "Approved" if decision.approved else "Rejected"
            edited = " with edited arguments" if decision.edited_arguments is not None else ""
            text = f"{verb} {decision.tool_call.tool_name} (call {call_id}){edited}."
            return _answered(request, form, call_id, text, "success", status=200)
    card = display.call_card(call_id)
    if card is None:
        return _refused(request, f"There is no call {call_id}.", status=404)
    return _invalid(request, card, form)


def _answered(
    request: HttpRequest,
    form: DecisionForm,
    call_id: int,
    text: str,
    level: notices.Level,
    *,
    status: int,
) -> HttpResponse:
    """The call is decided (by this operator or another): the queue's card goes, the
    session page's card shows the decision."""
    on_session_page = form.cleaned_data.get("card") == "session"
    if request.htmx and not on_session_page:
        # The common case, kept cheap: operators wait for it, and race each other.
        return notices.htmx_response(
            text, level, status=status, also=fragments.queue_removal(call_id)
        )
    card = display.call_card(call_id)
    assert card is not None  # decided calls are never deleted
    if request.htmx:
        # The card as it is now, swapped in by id (a fresher push wins: see dashboard.js).
        context = {"card": card, "can_decide": True, "oob": True}
        changed = render_to_string("agentdash/partials/call.html", context)
        return notices.htmx_response(text, level, status=status, also=changed)
    notices.remember(request, text, level)
    if on_session_page:
        if status != 200:
            return session_page(request, card.session.pk, status=status)
        page = reverse("session-detail", args=[card.session.pk])
        return redirect(f"{page}#call-{call_id}")
    return queue_page(request, status=status) if status != 200 else redirect("approvals")


def _invalid(request: HttpRequest, card: CallCard, form: DecisionForm) -> HttpResponse:
    """The decision was not taken: say why beside the card's forms, keeping the edit."""
    errors = [
        f"{name}: {error}" if name not in ("arguments", "__all__") else error
        for name, field_errors in form.errors.items()
        for error in field_errors
    ]
    if request.htmx:
        body = "".join(
            render_to_string("agentdash/partials/form_error.html", {"error": error})
            for error in errors
        )
        response = HttpResponse(body, status=422)
        response["HX-Retarget"] = f"#decision-errors-{card.pk}"
        response["HX-Reswap"] = "innerHTML"
        return response
    context = {
        "card": card,
        "errors": errors,
        "posted_arguments": form.data.get("arguments"),
        "can_decide": True,
    }
    return render(request, "agentdash/approvals/decide.html", context, status=422)


def _refused(request: HttpRequest, text: str, *, status: int) -> HttpResponse:
    if request.htmx:
        return notices.htmx_response(text, "error", status=status)
    notices.remember(request, text, "error")
    return queue_page(request, status=status)
