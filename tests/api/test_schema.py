"""The API against its own OpenAPI schema (schemathesis, in-process through WSGI).

For every operation, generated inputs, valid and invalid: no 5xx, and every answer
(status code, content type, body, headers) is one the schema declares. Bounded and
deterministic: a fixed seed, derandomized generation, a few examples per phase.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agentdash.models import ApiToken
from agentdash.wsgi import application
from tests.api.conftest import bearer

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20261125,
        # Unknown query parameters are ignored, as most HTTP APIs do, so that an older
        # server still answers a newer client: not "negative" data here.
        "generation": {"max-examples": 12, "deterministic": True, "allow-extra-parameters": False},
    }
)
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application, config=CONFIG)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


@pytest.fixture
def authorization(operator, pending) -> dict[str, str]:
    """An operator's token, with something in the database to find: a waiting call."""
    pending()
    token = ApiToken.issue(operator, "schemathesis")[1]
    return {"Authorization": bearer(token)["HTTP_AUTHORIZATION"]}


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_keeps_to_its_schema(case, authorization):
    case.call_and_validate(headers=authorization, checks=CHECKS)


def test_the_schema_names_no_key_twice(client):
    def refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), f"a key twice among {keys}"
        return dict(pairs)

    response = client.get("/api/v1/openapi.json")

    document = json.loads(response.content, object_pairs_hook=refuse_duplicates)
    assert (
        "text/csv"
        in document["paths"]["/api/v1/audit/export"]["get"]["responses"]["200"]["content"]
    )
