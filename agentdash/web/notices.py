"""Telling the operator what came of an action, with or without JavaScript.

An htmx request gets the notice as an out-of-band fragment for the page's `#notices`
stack; a plain form post gets it as a Django message, shown by the page it is
redirected to (base.html renders both the same way).
"""

from __future__ import annotations

from typing import Literal

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

Level = Literal["success", "info", "error"]

_MESSAGE_LEVELS = {"success": messages.SUCCESS, "info": messages.INFO, "error": messages.ERROR}


def fragment(text: str, level: Level) -> str:
    """The notice as an element that htmx puts first in `#notices`."""
    notice = render_to_string("agentdash/partials/notice.html", {"text": text, "level": level})
    return f'<div hx-swap-oob="afterbegin:#notices">{notice}</div>'


def htmx_response(
    text: str, level: Level, *, status: int = 200, body: str = "", reswap: str | None = None
) -> HttpResponse:
    """`body` for the request's target, and the notice beside it."""
    response = HttpResponse(body + fragment(text, level), status=status)
    if reswap is not None:
        response["HX-Reswap"] = reswap
    return response


def remember(request: HttpRequest, text: str, level: Level) -> None:
    """Show the notice on the next page this browser loads."""
    messages.add_message(request, _MESSAGE_LEVELS[level], text)
