import pytest

from tests.fakes.anthropic_server import fake_anthropic as fake_anthropic
from tests.fakes.openai_server import fake_openai as fake_openai


@pytest.fixture(autouse=True)
def _tiny_retry_delay(settings) -> None:
    """The providers' own retries (of streams that failed early) wait next to nothing."""
    settings.AGENTDASH_PROVIDER_RETRY_DELAY = 0.001
