"""Who may call the API: per-user tokens, hashed at rest, revocable; 401 JSON otherwise."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connections
from django.test import Client

from agentdash.models import ApiToken
from tests.api.conftest import API, ApiClient, bearer

pytestmark = pytest.mark.django_db


def assert_unauthenticated(response, detail: str = "Send an API token") -> None:
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert detail in response.json()["detail"]


def test_it_answers_401_json_without_a_token_never_a_login_redirect(client):
    assert_unauthenticated(client.get(f"{API}/sessions"))
    assert_unauthenticated(client.post(f"{API}/calls/1/decision", {}, "application/json"))


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Bearer nonsense", "This API token is not valid"),
        # well formed, but no such token
        ("Bearer agd_0123456789ab_" + "A" * 43, "This API token is not valid"),
        ("Basic b2xpdmlhOnB3", "Send an API token"),
        ("Bearer " + "agd_" + "\x00" * 60, "This API token is not valid"),
    ],
)
def test_it_answers_401_to_a_bad_token_saying_what_is_wrong(client, operator, header, detail):
    ApiToken.issue(operator, "real")

    assert_unauthenticated(client.get(f"{API}/sessions", HTTP_AUTHORIZATION=header), detail)


def test_a_token_with_a_wrong_secret_is_refused(client, operator):
    _, token = ApiToken.issue(operator, "real")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    assert_unauthenticated(client.get(f"{API}/sessions", **bearer(forged)), "is not valid")


def test_a_revoked_token_is_refused_and_says_so(operator):
    row, token = ApiToken.issue(operator, "pager bot")
    assert ApiClient(token).get("/sessions").status_code == 200

    assert row.revoke()

    assert_unauthenticated(ApiClient(token).get("/sessions"), "'pager bot' was revoked")
    assert not row.revoke(), "revoking twice changes nothing"


def test_a_deactivated_users_token_stops_working(operator):
    _, token = ApiToken.issue(operator, "bot")
    operator.is_active = False
    operator.save()

    assert_unauthenticated(ApiClient(token).get("/sessions"), "is not valid")


def test_only_a_hash_of_the_token_is_stored_and_use_is_recorded(operator):
    row, token = ApiToken.issue(operator, "bot")

    assert re.fullmatch(r"agd_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    assert row.hashed_secret == hashlib.sha256(token.encode()).hexdigest()
    assert token.split("_", 2)[2] not in str(ApiToken.objects.filter(pk=row.pk).values().get())
    assert row.last_used_at is None

    ApiClient(token).get("/sessions")

    row.refresh_from_db()
    assert row.last_used_at is not None


def test_the_schema_is_public_and_the_docs_page_needs_a_login_and_no_cdn(client, operator):
    schema = client.get(f"{API}/openapi.json")
    assert schema.status_code == 200
    assert "/api/v1/calls/{call_id}/decision" in schema.json()["paths"]
    assert schema.json()["components"]["securitySchemes"]["ApiTokenAuth"]["scheme"] == "bearer"

    assert client.get(f"{API}/docs").status_code == 302  # to the login page, as every page

    client.force_login(operator)
    page = client.get(f"{API}/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "assets must be served locally"


# --- the management command -------------------------------------------------------------


def issue_in_a_thread(user, name: str) -> tuple[ApiToken, str] | Exception:
    """What ApiToken.issue() returns or raises, run in a thread of its own: a regression
    to retrying forever fails the test instead of hanging the suite. The test must be
    transactional, for the thread's own connection to see its rows."""
    outcome: list[tuple[ApiToken, str] | Exception] = []

    def issue() -> None:
        try:
            outcome.append(ApiToken.issue(user, name))
        except Exception as error:
            outcome.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=issue, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "issue() kept drawing prefixes"
    return outcome[0]


# Transactional: foreign keys are checked at commit, and the commit must be issue()'s own.
@pytest.mark.django_db(transaction=True)
def test_a_token_for_a_user_gone_meanwhile_is_refused_not_retried(django_user_model, monkeypatch):
    gone = django_user_model(pk=999999, username="gone")
    draws: list[str] = []
    token_hex = secrets.token_hex

    def draw(nbytes: int) -> str:
        draws.append(token_hex(nbytes))
        return draws[-1]

    monkeypatch.setattr(secrets, "token_hex", draw)

    assert isinstance(issue_in_a_thread(gone, "bot"), IntegrityError)
    assert len(draws) == 1, "no prefix collided: nothing to draw again"
    assert not ApiToken.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_prefix_drawn_twice_is_drawn_again_but_not_forever(operator, monkeypatch):
    taken = ApiToken.issue(operator, "first")[0].prefix
    draws = iter([taken, "0123456789ab"])
    monkeypatch.setattr(secrets, "token_hex", lambda nbytes: next(draws))

    row, token = issue_in_a_thread(operator, "second")
    assert row.prefix == "0123456789ab"
    assert token.startswith("agd_0123456789ab_")

    monkeypatch.setattr(secrets, "token_hex", lambda nbytes: taken)
    assert isinstance(issue_in_a_thread(operator, "third"), IntegrityError)
    assert ApiToken.objects.count() == 2


def api_token(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("api_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_creates_lists_and_revokes_tokens(operator):
    token, warning = api_token("create", "--user", "olivia", "--name", "pager bot")
    token = token.strip()
    assert "cannot be shown again" in warning
    assert ApiClient(token).get("/sessions").status_code == 200
    prefix = token.split("_")[1]

    listing, _ = api_token("list", "--user", "olivia")
    assert f"{prefix}  olivia  'pager bot'" in listing
    assert "active" in listing
    assert token.split("_", 2)[2] not in listing

    revoked, _ = api_token("revoke", prefix)
    assert f"Revoked {prefix}" in revoked
    assert ApiClient(token).get("/sessions").status_code == 401
    assert "revoked" in api_token("list")[0]
    with pytest.raises(CommandError, match="already revoked"):
        api_token("revoke", prefix)


def test_the_command_refuses_unknown_users_and_prefixes(db):
    with pytest.raises(CommandError, match="No user 'nobody'"):
        api_token("create", "--user", "nobody", "--name", "x")
    with pytest.raises(CommandError, match="No token with prefix"):
        api_token("revoke", "0123456789ab")


def test_token_requests_need_no_csrf_token(operator):
    _, token = ApiToken.issue(operator, "bot")
    strict = Client(enforce_csrf_checks=True, **bearer(token))

    response = strict.post(f"{API}/sessions", {"goal": "x"}, content_type="application/json")

    assert response.status_code == 201


def test_the_browser_session_alone_does_not_open_the_api(operator):
    browser = Client()
    browser.force_login(operator)

    assert_unauthenticated(browser.get(f"{API}/sessions"))
