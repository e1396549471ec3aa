"""Routes of the sessions pages, the approval queue and the policy pages (their
websockets: agentdash.live)."""

from django.urls import path

from agentdash.web import approval_pages, policy_pages, session_pages

urlpatterns = [
    path("sessions/", session_pages.session_list, name="sessions"),
    path("sessions/new/", session_pages.start, name="session-new"),
    path("sessions/<int:session_id>/", session_pages.detail, name="session-detail"),
    path("sessions/<int:session_id>/cancel/", session_pages.cancel, name="session-cancel"),
    path("approvals/", approval_pages.queue, name="approvals"),
    path("calls/<int:call_id>/decide/", approval_pages.decide_call, name="decide-call"),
    path("calls/decide/", approval_pages.decide_calls, name="decide-calls"),
    path("policies/", policy_pages.rule_list, name="policies"),
    path("policies/new/", policy_pages.rule_new, name="policy-new"),
    path("policies/<int:rule_id>/edit/", policy_pages.rule_edit, name="policy-edit"),
    path("policies/<int:rule_id>/delete/", policy_pages.rule_delete, name="policy-delete"),
    path("policies/<int:rule_id>/move/", policy_pages.rule_move, name="policy-move"),
    path("sessions/<int:session_id>/policies/", policy_pages.rule_list, name="session-policies"),
    path(
        "sessions/<int:session_id>/policies/new/",
        policy_pages.rule_new,
        name="session-policy-new",
    ),
]
