"""get_provider, and what the start form is told about each provider."""

import pytest

from agentdash.providers import (
    AnthropicProvider,
    OpenAICompatibleProvider,
    ScriptedProvider,
    available_providers,
    default_model,
    default_provider,
    get_provider,
)


def test_get_provider_builds_each_provider_by_name():
    assert isinstance(get_provider("scripted"), ScriptedProvider)
    assert isinstance(get_provider("anthropic", api_key="k"), AnthropicProvider)
    assert isinstance(get_provider("openai", api_key="k"), OpenAICompatibleProvider)


def test_an_unknown_provider_is_named_with_the_choices():
    with pytest.raises(ValueError, match="Unknown provider 'gemini': choose one of scripted"):
        get_provider("gemini")


def test_with_no_key_the_scripted_demo_is_the_default_and_says_so():
    providers = {info.name: info for info in available_providers()}

    assert default_provider() == "scripted"
    assert providers["scripted"].configured
    assert "default because no API key is configured" in providers["scripted"].reason
    assert not providers["anthropic"].configured
    assert providers["anthropic"].reason == "Set ANTHROPIC_API_KEY to use Claude models."
    assert not providers["openai"].configured


def test_a_key_in_the_environment_makes_its_provider_the_default(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value")

    providers = {info.name: info for info in available_providers()}

    assert default_provider() == "anthropic"
    assert providers["anthropic"].configured
    assert providers["anthropic"].reason == "ANTHROPIC_API_KEY is set."
    assert "sk-ant-secret-value" not in repr(available_providers())
    assert "default" not in providers["scripted"].reason


def test_a_local_endpoint_configures_the_openai_compatible_provider(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")

    providers = {info.name: info for info in available_providers()}

    assert providers["openai"].configured
    assert "http://127.0.0.1:11434/v1" in providers["openai"].reason
    assert default_provider() == "openai"


def test_default_models_come_from_settings(settings):
    settings.AGENTDASH_DEFAULT_MODELS = {**settings.AGENTDASH_DEFAULT_MODELS, "openai": "qwen3"}

    assert default_model("anthropic") == "claude-sonnet-5-5"
    assert default_model("openai") == "qwen3"
