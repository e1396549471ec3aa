"""The policy pages: the ordered rules, global or of one session, and their editor.

Page contract (for the browser tests; every id below is stable):
  /policies/                     the global rules; table#policy-rules > tr#rule-<id>
                                 [data-testid=rule-row][data-action] in the order they are
                                 tried; a[data-testid=new-rule]; per row
                                 a[data-testid=edit-rule], button[data-testid=move-up],
                                 button[data-testid=move-down], button[data-testid=delete-rule].
  /sessions/<id>/policies/       the same for one session's rules (tried before the global ones).
  .../new/, /policies/<id>/edit/ form#rule-form: PolicyRuleForm's fields, each field's
                                 errors in p[data-testid=error-<field>];
                                 button[data-testid=preview-rule] (name=preview) shows
                                 table#rule-preview > tr[data-testid=preview-row]
                                 [data-changed] for the latest calls, nothing saved;
                                 button[data-testid=save-rule] saves (audited).

Who may change rules: whoever holds the decide permission (agentdash.decide_toolcall).
A rule is a standing decision on calls not yet made, so it belongs to the people who
decide calls; everyone else sees the rules read-only (and gets 403 on any change).
Every change goes through agentdash.policy.save_rule / delete_rule, which audit it.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from agentdash import policy
from agentdash.approvals import DECIDE_PERMISSION
from agentdash.models import AgentSession, PolicyRule
from agentdash.policy_forms import PolicyRuleForm
from agentdash.web import notices

# How many recorded calls a preview judges.
PREVIEW_CALLS = 50


def _require_editor(request: HttpRequest) -> None:
    if not request.user.has_perm(DECIDE_PERMISSION):
        raise PermissionDenied(
            f"{request.user.get_username()} may not change policy rules: that needs the "
            "permission to decide tool calls."
        )


def _rules(session: AgentSession | None) -> list[PolicyRule]:
    """The rules of one session (or the global ones), in the order they are tried."""
    return list(
        PolicyRule.objects.filter(session=session)
        .select_related("required_group")
        .order_by("position", "pk")
    )


def _list_url(session: AgentSession | None) -> str:
    if session is None:
        return reverse("policies")
    return reverse("session-policies", args=[session.pk])


@require_http_methods(["GET"])
def rule_list(request: HttpRequest, session_id: int | None = None) -> HttpResponse:
    session = get_object_or_404(AgentSession, pk=session_id) if session_id is not None else None
    context = {
        "session": session,
        "rules": _rules(session),
        "can_edit": request.user.has_perm(DECIDE_PERMISSION),
    }
    return render(request, "agentdash/policies/list.html", context)


@require_http_methods(["GET", "POST"])
def rule_new(request: HttpRequest, session_id: int | None = None) -> HttpResponse:
    session = get_object_or_404(AgentSession, pk=session_id) if session_id is not None else None
    return _edit(request, PolicyRule(), session)


@require_http_methods(["GET", "POST"])
def rule_edit(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(PolicyRule.objects.select_related("session"), pk=rule_id)
    return _edit(request, rule, rule.session)


def _edit(request: HttpRequest, rule: PolicyRule, session: AgentSession | None) -> HttpResponse:
    """The editor: GET shows it, POST with `preview` judges the rule against the latest
    calls without saving, any other POST saves it."""
    _require_editor(request)
    if request.method == "GET":
        if rule.pk is None:
            # A new rule goes last: below every rule of its list.
            rules = _rules(session)
            rule.position = rules[-1].position + 1 if rules else 0
        form = PolicyRuleForm(instance=rule, session=session)
        return _editor(request, form, session)
    form = PolicyRuleForm(request.POST, instance=rule, session=session)
    if not form.is_valid():
        return _editor(request, form, session, status=422)
    if "preview" in request.POST:
        return _editor(request, form, session, preview=form.preview(last=PREVIEW_CALLS))
    created = rule.pk is None
    try:
        saved = form.save_by(request.user)
    except ValidationError as error:  # the model's checks, run again when saving
        form.add_error(None, error)
        return _editor(request, form, session, status=422)
    verb = "Created" if created else "Saved"
    notices.remember(request, f"{verb} {saved}.", "success")
    return redirect(_list_url(session))


def _editor(
    request: HttpRequest,
    form: PolicyRuleForm,
    session: AgentSession | None,
    *,
    preview: list[policy.PreviewRow] | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "form": form,
        "session": session,
        "rule": form.instance,
        "preview": preview,
        "preview_calls": PREVIEW_CALLS,
        "changes": sum(row.changed for row in preview or []),
        "list_url": _list_url(session),
    }
    return render(request, "agentdash/policies/edit.html", context, status=status)


@require_POST
def rule_delete(request: HttpRequest, rule_id: int) -> HttpResponse:
    _require_editor(request)
    rule = get_object_or_404(PolicyRule.objects.select_related("session"), pk=rule_id)
    session, text = rule.session, f"Deleted {rule}."
    policy.delete_rule(rule, user=request.user)
    notices.remember(request, text, "success")
    return redirect(_list_url(session))


@require_POST
def rule_move(request: HttpRequest, rule_id: int) -> HttpResponse:
    """Move a rule one place up or down its list. The list is renumbered 10, 20, 30...
    so that equal positions (which the admin allows) still move; each rule whose
    position changes is saved, and so audited, on its own."""
    _require_editor(request)
    rule = get_object_or_404(PolicyRule.objects.select_related("session"), pk=rule_id)
    direction = request.POST.get("direction")
    if direction not in ("up", "down"):
        notices.remember(request, "Move a rule up or down.", "error")
        return redirect(_list_url(rule.session))
    rules = _rules(rule.session)
    index = next(i for i, r in enumerate(rules) if r.pk == rule.pk)
    other = index - 1 if direction == "up" else index + 1
    if 0 <= other < len(rules):
        rules[index], rules[other] = rules[other], rules[index]
        try:
            with transaction.atomic():
                for place, moved in enumerate(rules, start=1):
                    if moved.position != place * 10:
                        moved.position = place * 10
                        policy.save_rule(moved, user=request.user)
        except ValidationError as error:
            # A rule that no longer validates (its tool was removed) cannot be saved.
            text = f"Nothing moved: {'; '.join(error.messages)}"
            notices.remember(request, text, "error")
            return redirect(_list_url(rule.session))
    notices.remember(request, f"Moved {rule} {direction}.", "success")
    return redirect(f"{_list_url(rule.session)}#rule-{rule.pk}")
