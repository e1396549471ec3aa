"""Secrets (API keys, Authorization headers, passwords) never reach the audit log."""

import pytest
from django.db import transaction
from hypothesis import given
from hypothesis import strategies as st

from agentdash import audit
from agentdash.audit import REDACTED, redact
from agentdash.models import AuditEvent

OPENAI_KEY = "sk-proj-4fQ9xZ2LmN8pR7tV1wY3bC5dE6gH0jK"
ANTHROPIC_KEY = "sk-ant-api03-Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0GfEdCbA-9a8b7c6dAA"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "API_KEY",
        "apiKey",
        "ApiKey",
        "apikey",
        "x-api-key",
        "X-Api-Key",
        "anthropic_api_key",
        "OPENAI_API_KEY",
        "authorization",
        "Authorization",
        "Proxy-Authorization",
        "password",
        "db_password",
        "passwd",
        "secret",
        "client_secret",
        "secret_key",
        "token",
        "access_token",
        "refreshToken",
        "csrftoken",
        "Cookie",
        "set-cookie",
        "private_key",
        "credentials",
    ],
)
def test_it_hides_the_value_under_a_secret_key(key):
    assert redact({key: "hunter2"}) == {key: REDACTED}


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "input_tokens", "output_tokens", "tokens", "keys", "monkey", "author", "kind"],
)
def test_it_leaves_ordinary_keys_alone(key):
    assert redact({key: 1234}) == {key: 1234}


def test_it_hides_whole_structures_under_a_secret_key_at_any_depth():
    request = {
        "url": "https://api.example.test/v1/messages",
        "headers": [{"name": "x", "Authorization": {"scheme": "Bearer", "value": "abc"}}],
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }

    assert redact(request) == {
        "url": "https://api.example.test/v1/messages",
        "headers": [{"name": "x", "Authorization": REDACTED}],
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key={OPENAI_KEY}", f"key={REDACTED}"),
        (f"export ANTHROPIC_KEY={ANTHROPIC_KEY}\n", f"export ANTHROPIC_KEY={REDACTED}\n"),
        (f"Authorization: Bearer {JWT}", f"Authorization: Bearer {REDACTED}"),
        (
            "curl -H 'authorization: bearer abc123def456'",
            f"curl -H 'authorization: bearer {REDACTED}'",
        ),
    ],
)
def test_it_hides_strings_that_look_like_keys(text, expected):
    assert redact(text) == expected
    assert redact({"note": [text]}) == {"note": [expected]}


@pytest.mark.parametrize(
    "text",
    [
        "the bearer of bad news",
        "Bearer tokens go in the Authorization header",
        "sk-learn-compatible-estimator-wrapper",
        "ask-me-anything-2024-edition-extended",
        "a task-0123456789abcdefghij id",
    ],
)
def test_it_leaves_prose_alone(text):
    assert redact(text) == text


def test_it_keeps_types_and_never_modifies_its_input():
    original = {"tuple": ("a", OPENAI_KEY), "n": 1.5, "none": None, "password": "x"}

    result = redact(original)

    assert result == {"tuple": ("a", REDACTED), "n": 1.5, "none": None, "password": REDACTED}
    assert original["tuple"][1] == OPENAI_KEY
    assert original["password"] == "x"


@given(
    before=st.text(max_size=40),
    secret=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
        min_size=20,
        max_size=60,
    ),
    after=st.text(max_size=40),
)
def test_no_sk_key_survives_whatever_surrounds_it(before, secret, after):
    key = f"sk-{secret}7"  # real keys carry digits; the pattern requires one
    assert key not in redact(f"{before} {key} {after}")


@pytest.mark.django_db
def test_record_stores_payloads_redacted():
    with transaction.atomic():
        event = audit.record(
            "provider.called",
            actor="worker",
            payload={"headers": {"x-api-key": ANTHROPIC_KEY}, "error": f"401 for {OPENAI_KEY}"},
        )

    stored = AuditEvent.objects.get(seq=event.seq).payload
    assert stored == {"headers": {"x-api-key": REDACTED}, "error": f"401 for {REDACTED}"}
    assert audit.verify().ok
