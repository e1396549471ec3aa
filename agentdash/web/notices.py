"""Telling the operator what came of an action, with or without JavaScript.

An htmx request gets the notice for the page's `#notices` stack; a plain form post gets
it as a Django message, shown by the page it lands on (base.html renders both alike).
"""

from __future__ import annotations

from typing import Literal

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

Level = Literal["success", "info", "error"]

_MESSAGE_LEVELS = {"success": messages.SUCCESS, "info": messages.INFO, "error": messages.ERROR}


def htmx_response(text: str, level: Level, *, status: int = 200, also: str = "") -> HttpResponse:
    """The notice, for the `#notices` stack that htmx forms target, and `also`: fragments
    swapped out of band (the card or the header the action changed).

    Forms target `#notices` rather than their own card because a push may replace or
    delete that card while the request is in flight; htmx then looks for out-of-band
    targets inside the detached card, and nothing the answer carries would show.
    """
    notice = render_to_string("agentdash/partials/notice.html", {"text": text, "level": level})
    return HttpResponse(notice + also, status=status)


def remember(request: HttpRequest, text: str, level: Level) -> None:
    """Show the notice on the next page this browser loads."""
    messages.add_message(request, _MESSAGE_LEVELS[level], text)
