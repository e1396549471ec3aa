from tests.fakes.anthropic_server import fake_anthropic as fake_anthropic
from tests.fakes.openai_server import fake_openai as fake_openai
