"""A server error is answered with the error page and its traceback is in the server's log,
as that page says, with DEBUG off (Django prints its own only with DEBUG on)."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from agentdash.urls import urlpatterns as project_urls


@login_not_required
def broken(request: HttpRequest) -> HttpResponse:
    raise LookupError("the ledger page was torn out")


urlpatterns = [path("broken/", broken), *project_urls]


@pytest.mark.django_db
def test_a_500_is_logged_with_its_traceback(settings):
    settings.ROOT_URLCONF = __name__
    settings.DEBUG = False
    log = io.StringIO()
    # The server's log (pytest adds capturing handlers of its own beside it).
    [console] = [
        handler
        for handler in logging.getLogger("django.request").handlers
        if type(handler) is logging.StreamHandler
    ]
    console.setStream(log)
    try:
        response = Client(raise_request_exception=False).get("/broken/")
    finally:
        console.setStream(sys.stderr)

    assert response.status_code == 500
    assert b"in the server's log" in response.content
    assert "ERROR django.request: Internal Server Error: /broken/" in log.getvalue()
    assert "LookupError: the ledger page was torn out" in log.getvalue()
