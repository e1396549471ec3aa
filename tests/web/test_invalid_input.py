"""Hostile input everywhere: every URL the project routes, with garbage ids, wrong methods,
bad query strings, non-UTF-8 and oversized bodies, missing fields and no CSRF token, as
an anonymous visitor, a viewer and an operator (and a superuser for the admin). Every
answer is a 2xx, 3xx or 4xx: never a 500.

The URLs are not listed by hand: they come from walking the resolver, so a page added
later is covered the day it is added (and `test_the_walk_covers_every_route` fails if
one cannot be turned into a concrete URL).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.test import AsyncClient, Client
from django.urls import URLPattern, URLResolver, get_resolver

from agentdash.models import ApiToken, PolicyRule, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState

pytestmark = pytest.mark.django_db(transaction=True)

# Larger than any integer column (SQLite and PostgreSQL take 8-byte integers at most).
HUGE_ID = "9" * 30
GARBAGE_QUERY = (
    "page=99999999999999999999999&cursor=-1&before=%ff%fe&after=abc&q=%00%ff"
    "&session=-5&tool=%e2%28%a1&format=../../etc/passwd&limit=1e309&o=1.2.3&p="
    + "x" * 5000
    + "&since=9999-99-99&until=0000-00-00T99:99&kind=%00&actor=%ff&before="
    + HUGE_ID
    + "&chart=../x&days="
    + HUGE_ID
    + "&since=1e309"
)
# Not UTF-8, and one field far larger than any form expects.
NON_UTF8_BODY = b"goal=\xff\xfe\xfd&action=\xc3\x28&arguments=%ff%fe&calls=\xe2\x28\xa1"
OVERSIZED_FIELDS = {
    "goal": "g" * 200_000,
    "action": "approve" * 1000,
    "arguments": "[" * 10_000,
    "reason": "r" * 100_000,
    "calls": ["1:" + "f" * 5000, "-1:abc", HUGE_ID + ":0"],
    "max_steps": HUGE_ID,
    "max_cost": "1e309",
    "max_tokens": "-1",
    "script": "{" * 10_000,
    "conditions": '{"a":' * 2000,
    "priority": HUGE_ID,
    "direction": "sideways",
    "tools": ["no_such_tool", "\x00"],
    "provider": "\u202e\x00",
    "card": "../../",
}


@dataclass(frozen=True)
class Route:
    template: str  # "sessions/<int:session_id>/"
    name: str | None


def routes(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[Route]:
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            assert isinstance(pattern, URLPattern)
            yield Route(prefix + str(pattern.pattern), pattern.name)


_ROUTE_PARAMETER = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>[^)]*)\)")


def concrete_paths(route: Route, existing: dict[str, str]) -> list[str]:
    """URLs for `route`: each parameter as an id that exists, one that does not, one too
    large for any column, and a value that is not a number."""
    template = route.template
    if "(?P<" in template or template.startswith("^") or "^" in template:
        # The admin's regex routes: an alternation gives its first word, anything else a
        # path of garbage.
        template = template.replace("^", "").replace("$", "")
        template = _REGEX_GROUP.sub(
            lambda m: m["body"].split("|")[0] if "|" in m["body"] else "no/such/page", template
        )
        return ["/" + template]
    names = [m["name"] for m in _ROUTE_PARAMETER.finditer(template)]
    if not names:
        return ["/" + template]
    paths = []
    for variant in ("existing", "0", HUGE_ID, "-1", "%ff", "abc"):
        path = template
        for name in names:
            value = existing.get(name, "1") if variant == "existing" else variant
            path = re.sub(rf"<(?:\w+:)?{name}>", value, path)
        paths.append("/" + path)
    return paths


@pytest.fixture(autouse=True)
def _fresh_failure_counts():
    """These tests send hundreds of bad tokens and logins: the address they come from is
    locked out (agentdash/ratelimit.py) and must not stay so for the tests after them."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world(operator, run_queued_steps) -> dict[str, str]:
    """Something of every kind to find: a session, a waiting call, a rule, a token."""
    session = start_session(
        goal="Keep notes",
        owner=operator,
        script=[
            [
                {
                    "type": "tool_use",
                    "id": "w1",
                    "name": "write_file",
                    "input": {"path": "n.md", "content": "hi"},
                }
            ],
            [{"type": "text", "text": "Done."}],
        ],
    )
    run_queued_steps()
    call = ToolCall.objects.get(session=session, state=CallState.PENDING_APPROVAL)
    rule = PolicyRule.objects.create(name="ask for writes", tool="write_file")
    token, _ = ApiToken.issue(operator, "walk")
    ids = {"session_id": session.pk, "call_id": call.pk, "rule_id": rule.pk, "id": operator.pk}
    return {
        **{name: str(value) for name, value in ids.items()},
        "fmt": "jsonl",
        "object_id": str(token.pk),
        "content_type_id": "1",
    }


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("sam", password="pw-sam-123")


@pytest.fixture(params=["anonymous", "viewer", "operator"])
def persona(request, viewer, operator) -> Client:
    # Exceptions become 500 answers here, as in production, so that the test can name
    # every failing request at once rather than stopping at the first.
    client = Client(raise_request_exception=False)
    if request.param != "anonymous":
        client.force_login({"viewer": viewer, "operator": operator}[request.param])
    return client


def hostile_requests(client: Client, path: str) -> Iterator[tuple[str, Any]]:
    """(what was sent, the response) for each kind of hostile request to `path`."""
    yield "GET garbage query", client.get(f"{path}?{GARBAGE_QUERY}")
    yield "GET page=huge", client.get(path, {"page": HUGE_ID, "before": HUGE_ID})
    yield "POST no fields", client.post(path, {})
    yield "POST oversized fields", client.post(path, OVERSIZED_FIELDS)
    yield (
        "POST non-UTF-8 form",
        client.generic(
            "POST", path, NON_UTF8_BODY, content_type="application/x-www-form-urlencoded"
        ),
    )
    yield (
        "POST non-UTF-8 JSON",
        client.generic("POST", path, b'{"goal": "\xff\xfe"}', content_type="application/json"),
    )
    yield "POST JSON array", client.post(path, b"[[[[[[]]]]]]", content_type="application/json")
    yield "PUT", client.put(path, b"\x00\x01", content_type="application/octet-stream")
    yield "DELETE", client.delete(path)
    yield "PATCH", client.patch(path, "{}", content_type="application/json")
    yield "HEAD", client.head(path)
    yield "OPTIONS", client.options(path)
    yield "TRACE-like unknown method", client.generic("PROPFIND", path)


def server_errors(client: Client, paths: list[str]) -> list[str]:
    failures = []
    for path in paths:
        for sent, response in hostile_requests(client, path):
            if response.status_code >= 500:
                failures.append(f"{sent} {path} -> {response.status_code}")
    return failures


def app_paths(world: dict[str, str], *, admin: bool) -> list[str]:
    return [
        path
        for route in routes()
        if route.template.startswith("admin/") == admin
        for path in concrete_paths(route, world)
    ]


def test_the_walk_covers_every_route(world):
    all_routes = list(routes())
    paths = [path for route in all_routes for path in concrete_paths(route, world)]

    assert len(all_routes) > 80  # the project's pages, the API, the admin
    assert all("<" not in path and "(?P" not in path for path in paths)
    assert "/sessions/" + HUGE_ID + "/" in paths


def test_no_page_or_endpoint_answers_500_to_hostile_input(persona, world):
    failures = server_errors(persona, app_paths(world, admin=False))

    assert failures == []


async def test_hostile_input_through_asgi_answers_without_500(operator, world):
    """Production serves through Daphne: ASGI reads bodies and query strings its own way
    (and the audit export streams asynchronously there)."""
    client = AsyncClient(raise_request_exception=False)
    await client.aforce_login(operator)
    failures = []
    for path in await sync_to_async(app_paths)(world, admin=False):
        for sent, response in [
            ("GET garbage query", await client.get(f"{path}?{GARBAGE_QUERY}")),
            ("POST oversized fields", await client.post(path, OVERSIZED_FIELDS)),
            (
                "POST non-UTF-8 form",
                await client.generic(
                    "POST", path, NON_UTF8_BODY, content_type="application/x-www-form-urlencoded"
                ),
            ),
        ]:
            if response.status_code >= 500:
                failures.append(f"{sent} {path} -> {response.status_code}")

    assert failures == []


def test_the_admin_answers_hostile_input_without_500(superuser, world):
    client = Client(raise_request_exception=False)
    client.force_login(superuser)

    failures = server_errors(client, app_paths(world, admin=True))

    assert failures == []


@pytest.mark.parametrize(
    "path",
    ["/sessions/new/", "/calls/decide/", "/policies/new/", "/login/", "/logout/"],
)
def test_a_post_without_a_csrf_token_is_refused_with_403(path, operator):
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    client.force_login(operator)

    response = client.post(path, {"goal": "x", "username": "olivia", "password": "nope"})

    assert response.status_code == 403


def test_api_endpoints_with_bad_tokens_and_bodies_answer_4xx(world, operator):
    """Besides schemathesis (tests/api/test_schema.py), what a schema does not describe:
    malformed Authorization headers and bodies that are not JSON at all."""
    api_paths = [
        path
        for route in routes()
        if route.template.startswith("api/v1/")
        for path in concrete_paths(route, world)
    ]
    token = ApiToken.issue(operator, "hostile")[1]
    authorizations = [
        "",
        "Bearer",
        "Bearer ",
        "Basic b2xpdmlhOnB3",
        "Bearer " + "x" * 10_000,
        "Bearer \x00\x01",
        "Bearer ad_" + "\u00e9" * 40,
        f"Bearer {token}",
    ]
    failures = []
    for authorization in authorizations:
        client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=authorization)
        for path in api_paths:
            for sent, response in hostile_requests(client, path):
                if response.status_code >= 500:
                    failures.append(
                        f"{authorization[:20]!r} {sent} {path} -> {response.status_code}"
                    )

    assert failures == []


def test_a_viewer_cannot_decide_even_with_a_well_formed_request(viewer, world):
    client = Client(raise_request_exception=False)
    client.force_login(viewer)

    response = client.post(f"/calls/{world['call_id']}/decide/", {"action": "approve"})

    assert response.status_code == 403
    assert ToolCall.objects.get(pk=world["call_id"]).state == CallState.PENDING_APPROVAL


def test_decide_permission_exists():
    # The personas above rely on it: a renamed permission would make every request 403.
    assert Permission.objects.filter(codename="decide_toolcall").exists()
