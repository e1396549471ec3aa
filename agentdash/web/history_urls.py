"""Routes of the audit history and charts pages."""

from django.urls import path

from agentdash.web import history

app_name = "history"

urlpatterns = [
    path("", history.index, name="index"),
    path("export.<str:fmt>", history.export, name="export"),
    path("verify/", history.verify, name="verify"),
    path("charts/", history.chart_page, name="charts"),
]
