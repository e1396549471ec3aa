"""LLM providers behind one small interface (see base.Provider).

    provider = get_provider("anthropic")        # or "openai", or "scripted"
    reply = provider.complete(ModelRequest(model=..., messages=[...]), on_text=print)
    cost = cost_of(reply.model, reply.usage)

No module here touches the database: providers read settings and the SDKs' usual
environment variables, and nothing else.
"""

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from .anthropic_api import AnthropicProvider
from .base import (
    ModelReply,
    ModelRequest,
    Provider,
    StopReason,
    TextCallback,
    Usage,
    configured_reason,
)
from .errors import ErrorKind, ProviderError
from .openai_compat import OpenAICompatibleProvider
from .pricing import cost_of
from .scripted import ScriptedProvider, load_script, validate_script

__all__ = [
    "AnthropicProvider",
    "ErrorKind",
    "ModelReply",
    "ModelRequest",
    "OpenAICompatibleProvider",
    "Provider",
    "ProviderError",
    "ProviderInfo",
    "ScriptedProvider",
    "StopReason",
    "TextCallback",
    "Usage",
    "available_providers",
    "cost_of",
    "default_model",
    "default_provider",
    "get_provider",
    "load_script",
    "validate_script",
]

_PROVIDERS: dict[str, type[AnthropicProvider | OpenAICompatibleProvider | ScriptedProvider]] = {
    "scripted": ScriptedProvider,
    "anthropic": AnthropicProvider,
    "openai": OpenAICompatibleProvider,
}


def get_provider(name: str, **options: Any) -> Provider:
    """A ready provider. Options: api_key, base_url, max_retries, timeout (the API
    providers; defaults from the environment and settings) or script (scripted).

    Raises ProviderError(kind=auth) when an API provider has no key or endpoint."""
    try:
        provider_class = _PROVIDERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown provider {name!r}: choose one of {', '.join(_PROVIDERS)}."
        ) from None
    return provider_class(**options)


def default_model(provider_name: str) -> str:
    return settings.AGENTDASH_DEFAULT_MODELS[provider_name]


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    label: str
    configured: bool
    reason: str


def available_providers() -> list[ProviderInfo]:
    """Every provider, whether it can be used here and why, for the start form."""
    anthropic = configured_reason("ANTHROPIC")
    openai = configured_reason("OPENAI")
    scripted_reason = "Plays a script, or the built-in demo, offline."
    if anthropic is None and openai is None:
        scripted_reason += " It is the default because no API key is configured."
    return [
        ProviderInfo("scripted", "Scripted demo (offline)", True, scripted_reason),
        ProviderInfo(
            "anthropic",
            "Anthropic (Claude)",
            anthropic is not None,
            anthropic or "Set ANTHROPIC_API_KEY to use Claude models.",
        ),
        ProviderInfo(
            "openai",
            "OpenAI-compatible API",
            openai is not None,
            openai or "Set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server (Ollama, vLLM).",
        ),
    ]


def default_provider() -> str:
    """The first configured API provider, else the scripted demo."""
    for info in available_providers():
        if info.configured and info.name != "scripted":
            return info.name
    return "scripted"
