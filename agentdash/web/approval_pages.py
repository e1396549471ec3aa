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
  div#queue-batches > section#queue-batch-<message> [data-testid=queue-batch]: one per
                         model step with more than one pending call, naming them
                         (a[data-testid=batch-call][data-call-id]); operators who may decide
                         get button[data-testid=batch-approve] and details >
                         summary[data-testid=batch-reject-open] with
                         input[data-testid=batch-reject-reason], button[data-testid=batch-reject].
  POST /calls/decide/    action=approve|reject, calls=<id>:<arguments hash> (repeated),
                         reason. All or nothing (approvals.decide_many), each call audited
                         on its own. 200 decided; 400 bad input or calls of several steps;
                         409 one was decided already, expired or changed (the notice names
                         it); 403; 404 a call that does not exist.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agentdash.approvals import (
    DECIDE_PERMISSION,
    AlreadyDecided,
    ArgumentsChanged,
    InvalidEdit,
    decide,
    decide_many,
)
from agentdash.live import fragments, routing
from agentdash.models import ApprovalDecision, ToolCall
from agentdash.states import CallState
from agentdash.web import display, notices
from agentdash.web.display import CallCard
from agentdash.web.forms import BatchDecisionForm, DecisionForm
from agentdash.web.session_pages import session_page


@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    return queue_page(request)


def queue_page(request: HttpRequest, *, status: int = 200) -> HttpResponse:
    """The queue; a refused decision answers with it too, and its notice."""
    cards = display.pending_cards()
    context = {
        "cards": cards,
        "batches": display.batches(cards),
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
        data = form.cleaned_data
        try:
            decision = decide(
                call_id,
                user=request.user,
                approve=form.approve,
                reason=data["reason"],
                edited_arguments=form.edited_arguments,
                expected_hash=data["expected_hash"] or None,
                allow_for_session=form.approve and data["allow_for_session"],
            )
        except ToolCall.DoesNotExist:
            return _refused(request, f"There is no call {call_id}.", status=404)
        except (AlreadyDecided, ArgumentsChanged) as moved_on:
            return _answered(request, form, call_id, str(moved_on), "error", status=409)
        except PermissionDenied as refusal:  # a role, four eyes, or a withdrawn permission
            return _refused(request, str(refusal), status=403)
        except InvalidEdit as refusal:
            form.add_edit_errors(refusal)
        else:
            return _answered(request, form, call_id, _outcome(decision), "success", status=200)
    card = display.call_card(call_id)
    if card is None:
        return _refused(request, f"There is no call {call_id}.", status=404)
    return _invalid(request, card, form)


@require_POST
def decide_calls(request: HttpRequest) -> HttpResponse:
    """Approve or reject the pending calls of one step together (approvals.decide_many):
    all of them or, when one cannot be decided, none, with the reason naming that call."""
    if not request.user.has_perm(DECIDE_PERMISSION):
        text = f"{request.user.get_username()} may not approve or reject tool calls."
        return _refused(request, text, status=403)
    form = BatchDecisionForm(request.POST)
    if not form.is_valid():
        text = " ".join(error for errors in form.errors.values() for error in errors)
        return _refused(request, f"Nothing was decided: {text}", status=400)
    hashes: dict[int, str] = form.cleaned_data["calls"]
    try:
        decisions = decide_many(
            hashes,
            user=request.user,
            approve=form.approve,
            reason=form.cleaned_data["reason"],
            expected_hashes=hashes,
        )
    except ToolCall.DoesNotExist as missing:
        return _refused(request, f"Nothing was decided: {missing}", status=404)
    except ValueError as refusal:  # calls of more than one step
        return _refused(request, f"Nothing was decided: {refusal}", status=400)
    except (AlreadyDecided, ArgumentsChanged) as moved_on:
        return _refused(request, f"Nothing was decided: {moved_on}", status=409)
    except PermissionDenied as refusal:
        return _refused(request, f"Nothing was decided: {refusal}", status=403)
    settled = [d for d in decisions if d.tool_call.state != CallState.PENDING_APPROVAL]
    verb = "Approved" if form.approve else "Rejected"
    text = f"{verb} {len(decisions)} calls: " + ", ".join(
        f"{d.tool_call.tool_name} (call {d.tool_call.pk})" for d in decisions
    )
    if waiting := len(decisions) - len(settled):
        text += f". {waiting} of them wait for another operator's approval"
    if request.htmx:
        removals = "".join(fragments.queue_removal(d.tool_call.pk) for d in settled)
        return notices.htmx_response(f"{text}.", "success", also=removals)
    notices.remember(request, f"{text}.", "success")
    return redirect("approvals")


def _outcome(decision: ApprovalDecision) -> str:
    call = decision.tool_call
    what = f"{call.tool_name} (call {call.pk})"
    if not decision.approved:
        return f"Rejected {what}."
    edited = " with edited arguments" if decision.edited_arguments is not None else ""
    if call.state == CallState.PENDING_APPROVAL:
        given = call.approvals_given()
        return (
            f"Your approval of {what}{edited} is recorded: {given} of "
            f"{call.approvals_required}. It waits for another operator."
        )
    allowed = (
        f"; {call.tool_name} is allowed for the rest of the session"
        if decision.allow_for_session
        else ""
    )
    return f"Approved {what}{edited}{allowed}."


def _answered(
    request: HttpRequest,
    form: DecisionForm,
    call_id: int,
    text: str,
    level: notices.Level,
    *,
    status: int,
) -> HttpResponse:
    """Tell the operator what came of their decision, with the card as it is now: gone
    from the queue once the call is settled, updated everywhere else."""
    on_session_page = form.cleaned_data.get("card") == "session"
    if request.htmx and not on_session_page:
        # The common case, kept cheap: operators wait for it, and race each other.
        state = ToolCall.objects.filter(pk=call_id).order_by().values_list("state", flat=True)
        if state.first() != CallState.PENDING_APPROVAL:
            removal = fragments.queue_removal(call_id)
            return notices.htmx_response(text, level, status=status, also=removal)
    card = display.call_card(call_id)
    assert card is not None  # decided calls are never deleted
    if request.htmx:
        # Swapped in by id; a fresher push wins (see dashboard.js).
        template = "call.html" if on_session_page else "queue_card.html"
        context = {"card": card, "can_decide": True, "oob": True}
        changed = render_to_string(f"agentdash/partials/{template}", context)
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
