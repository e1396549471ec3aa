"""Thin views: read what the models and services hold, render it.

The sessions pages and the approval queue live in agentdash.web.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from agentdash.toolbox import tool_catalogue


def home(request: HttpRequest) -> HttpResponse:
    return redirect("sessions")


def tool_list(request: HttpRequest) -> HttpResponse:
    return render(request, "agentdash/tool_list.html", {"tools": tool_catalogue()})
