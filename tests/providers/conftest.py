import pytest

from tests.fakes.anthropic_server import fake_anthropic as fake_anthropic
from tests.fakes.openai_server import fake_openai as fake_openai

PROVIDER_ENVIRONMENT = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)


@pytest.fixture(autouse=True)
def _no_provider_environment(monkeypatch):
    """A developer's real keys must never reach a test, nor change what it sees."""
    for name in PROVIDER_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
