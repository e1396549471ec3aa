"""Token guessing at the API and /metrics: bad tokens counted per client address, then
429 with Retry-After for every token from that address, an audit event and a log line."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from agentdash.models import ApiToken, AuditEvent
from tests.api.conftest import API, bearer

pytestmark = pytest.mark.django_db

ATTACKER = "203.0.113.99"
BYSTANDER = "198.51.100.30"
FORGED = "agd_0123456789ab_" + "A" * 43  # well formed, but no such token


@pytest.fixture(autouse=True)
def _fresh_counts():
    cache.clear()
    yield
    cache.clear()


def get(path: str, token: str | None, *, address: str = ATTACKER):
    headers = bearer(token) if token is not None else {}
    return Client(REMOTE_ADDR=address, **headers).get(path)


def test_twenty_bad_tokens_lock_the_address_out_with_retry_after(operator, caplog):
    good = ApiToken.issue(operator, "real")[1]
    for _ in range(19):
        assert get(f"{API}/sessions", FORGED).status_code == 401

    locking = get(f"{API}/sessions", FORGED)  # the twentieth
    with_a_good_token = get(f"{API}/sessions", good)

    for refused in (locking, with_a_good_token):
        assert refused.status_code == 429
        assert refused["Content-Type"] == "application/json; charset=utf-8"
        assert 0 < int(refused["Retry-After"]) <= 60
        assert refused.json()["detail"].startswith("Too many failed attempts. Try again in")
    (event,) = AuditEvent.objects.filter(kind="auth.locked_out")
    assert event.payload["address"] == ATTACKER
    assert event.payload["scope"] == "api-token-address"
    assert "Locked out for" in caplog.text


def test_other_addresses_keep_working(operator):
    good = ApiToken.issue(operator, "real")[1]
    for _ in range(20):
        get(f"{API}/sessions", FORGED)

    assert get(f"{API}/sessions", good, address=BYSTANDER).status_code == 200


def test_requests_without_a_token_are_not_counted_as_guesses(operator, settings):
    settings.AGENTDASH_API_TOKEN_RATE = "3/m"
    good = ApiToken.issue(operator, "real")[1]
    for _ in range(10):
        assert get(f"{API}/sessions", None).status_code == 401

    assert get(f"{API}/sessions", good).status_code == 200


def test_revoked_tokens_count_as_failures(operator, settings):
    settings.AGENTDASH_API_TOKEN_RATE = "3/m"
    row, revoked = ApiToken.issue(operator, "old")
    row.revoke()
    for _ in range(3):
        get(f"{API}/approvals", revoked)

    assert get(f"{API}/approvals", ApiToken.issue(operator, "new")[1]).status_code == 429


def test_metrics_tokens_share_the_count(operator, settings):
    """/metrics takes the same tokens; guessing there locks the API too, and back."""
    settings.AGENTDASH_API_TOKEN_RATE = "4/m"
    good = ApiToken.issue(operator, "prometheus")[1]
    for _ in range(2):
        assert get("/metrics", FORGED).status_code == 401
    for _ in range(2):
        get(f"{API}/sessions", FORGED)

    refused = get("/metrics", good)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert get(f"{API}/sessions", good).status_code == 429


def test_the_schema_documents_429(client):
    operations = client.get(f"{API}/openapi.json").json()["paths"]

    for path, methods in operations.items():
        for method, operation in methods.items():
            assert "429" in operation["responses"], f"{method} {path}"
