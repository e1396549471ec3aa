"""Routes of the sessions pages and the approval queue (their websockets: agentdash.live)."""

from django.urls import path

from agentdash.web import approval_pages, session_pages

urlpatterns = [
    path("sessions/", session_pages.session_list, name="sessions"),
    path("sessions/new/", session_pages.start, name="session-new"),
    path("sessions/<int:session_id>/", session_pages.detail, name="session-detail"),
    path("sessions/<int:session_id>/cancel/", session_pages.cancel, name="session-cancel"),
    path("approvals/", approval_pages.queue, name="approvals"),
    path("calls/<int:call_id>/decide/", approval_pages.decide_call, name="decide-call"),
]
