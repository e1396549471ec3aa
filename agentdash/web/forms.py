"""The dashboard's forms: starting a session, deciding a tool call or a step's calls.

Every bad input becomes an error on the field it concerns, shown next to it, and a 4xx
response; nothing an operator types can cause a 500.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings

from agentdash.approvals import InvalidEdit
from agentdash.json_input import load_storable_json
from agentdash.models.sessions import DEFAULT_MAX_STEPS
from agentdash.providers import (
    ProviderInfo,
    available_providers,
    default_model,
    default_provider,
    validate_script,
)
from agentdash.sessions import check_provider
from agentdash.toolbox import ToolInfo, tool_catalogue
from agentdash.web.history_query import MAX_ID

MAX_STEPS_LIMIT = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ProviderSelect(forms.RadioSelect):
    """Radio buttons that show a provider that is not configured here as disabled."""

    def __init__(self, infos: list[ProviderInfo]) -> None:
        super().__init__()
        self.unavailable = {info.name for info in infos if not info.configured}

    def create_option(self, name: str, value: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(name, value, *args, **kwargs)
        if value in self.unavailable:
            option["attrs"]["disabled"] = True
        return option


class StartSessionForm(forms.Form):
    goal = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "What should the agent do?"}),
        max_length=20_000,
        strip=True,
    )
    provider = forms.ChoiceField()
    model = forms.CharField(
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"list": "known-models", "autocomplete": "off"}),
        help_text="Leave empty for the provider's default model.",
    )
    tools = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Enable at least one tool."},
    )
    max_steps = forms.IntegerField(
        label="Max model steps", min_value=1, max_value=MAX_STEPS_LIMIT, initial=DEFAULT_MAX_STEPS
    )
    # The API's bound too: the largest integer the column (and SQLite) can hold.
    max_tokens = forms.IntegerField(
        label="Max tokens", min_value=1, max_value=MAX_ID, required=False
    )
    max_cost = forms.DecimalField(
        label="Max cost (USD)",
        min_value=Decimal(0),
        max_digits=12,
        decimal_places=6,
        required=False,
    )
    system_prompt = forms.CharField(
        required=False,
        max_length=20_000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Leave empty for agentdash's default instructions.",
    )
    script = forms.CharField(
        label="Script (JSON)",
        required=False,
        max_length=1_000_000,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="Scripted provider only: a JSON list of turns, each a list of Anthropic "
        "content blocks. Empty plays the built-in demo.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.providers = available_providers()
        self.catalogue: list[ToolInfo] = tool_catalogue()
        provider = self.fields["provider"]
        assert isinstance(provider, forms.ChoiceField)
        provider.widget = ProviderSelect(self.providers)  # before the choices: it takes them
        provider.choices = [(info.name, info.label) for info in self.providers]
        provider.initial = default_provider()
        tools = self.fields["tools"]
        assert isinstance(tools, forms.MultipleChoiceField)
        tools.choices = [(tool.name, tool.name) for tool in self.catalogue]
        tools.initial = [tool.name for tool in self.catalogue]

    @property
    def provider_options(self) -> list[tuple[Any, ProviderInfo]]:
        """Each provider's radio button with what the page says about it."""
        return list(zip(self["provider"], self.providers, strict=True))

    @property
    def tool_options(self) -> list[tuple[Any, ToolInfo]]:
        return list(zip(self["tools"], self.catalogue, strict=True))

    @property
    def default_models(self) -> dict[str, str]:
        return {info.name: default_model(info.name) for info in self.providers}

    @property
    def known_models(self) -> list[str]:
        return sorted(settings.AGENTDASH_MODEL_PRICES)

    def clean_provider(self) -> str:
        name = self.cleaned_data["provider"]
        try:
            check_provider(name)
        except ValueError as refusal:
            raise forms.ValidationError(str(refusal)) from None
        return name

    def clean_script(self) -> list[Any] | None:
        text = self.cleaned_data["script"].strip()
        if not text:
            return None
        try:
            return validate_script(load_storable_json(text))
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("script") is not None and cleaned.get("provider") != "scripted":
            self.add_error("script", "Only the scripted provider plays a script.")
        return cleaned


class DecisionForm(forms.Form):
    """One operator decision on a pending call, as posted by a card's buttons."""

    APPROVE, EDIT, REJECT = "approve", "edit", "reject"

    action = forms.ChoiceField(
        choices=[(APPROVE, "Approve"), (EDIT, "Approve with edits"), (REJECT, "Reject")]
    )
    arguments = forms.CharField(required=False, strip=False, max_length=2_000_000)
    reason = forms.CharField(required=False, max_length=5_000)
    # The hash of the arguments the operator was shown: nobody approves what they did not see.
    expected_hash = forms.CharField(required=False, max_length=64)
    allow_for_session = forms.BooleanField(required=False)
    # Which card the form belongs to, so that the answer updates that card.
    card = forms.ChoiceField(choices=[("queue", "queue"), ("session", "session")], initial="queue")

    @property
    def approve(self) -> bool:
        return self.cleaned_data["action"] != self.REJECT

    @property
    def edited_arguments(self) -> dict[str, Any] | None:
        return self.cleaned_data.get("parsed_arguments")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("action") != self.EDIT:
            return cleaned
        text = cleaned.get("arguments", "")
        try:
            parsed = load_storable_json(text)
        except forms.ValidationError as error:
            self.add_error("arguments", error)
            return cleaned
        if not isinstance(parsed, dict):
            self.add_error("arguments", "The arguments must be a JSON object ({...}).")
            return cleaned
        cleaned["parsed_arguments"] = parsed
        return cleaned

    def add_edit_errors(self, refusal: InvalidEdit) -> None:
        """The tool's schema refused the edit: one line per field it names."""
        for error in refusal.errors or [{"field": "", "message": str(refusal)}]:
            self.add_error("arguments", f"{error['field'] or 'arguments'}: {error['message']}")


class BatchDecisionForm(forms.Form):
    """One decision on every pending call of a model step, as the queue's batch bar
    posts it: each call as "<id>:<hash of the arguments the operator saw>"."""

    APPROVE, REJECT = "approve", "reject"
    MAX_CALLS = 100

    action = forms.ChoiceField(choices=[(APPROVE, "Approve all"), (REJECT, "Reject all")])
    # Repeated "calls" values; clean_calls() reads them.
    calls = forms.Field(
        widget=forms.MultipleHiddenInput, error_messages={"required": "Choose the calls to decide."}
    )
    reason = forms.CharField(required=False, max_length=5_000)

    @property
    def approve(self) -> bool:
        return self.cleaned_data["action"] == self.APPROVE

    def clean_calls(self) -> dict[int, str]:
        """Call id → the hash its operator saw, in the order posted."""
        values = self.cleaned_data["calls"]
        if not isinstance(values, list):
            values = [values]
        if len(values) > self.MAX_CALLS:
            raise forms.ValidationError(f"At most {self.MAX_CALLS} calls at once.")
        hashes: dict[int, str] = {}
        for value in values:
            call_id, _, digest = value.partition(":")
            if not call_id.isascii() or not call_id.isdigit() or len(call_id) > 18:
                raise forms.ValidationError(f"{value!r} does not name a call.")
            if not _SHA256.fullmatch(digest):
                # A batch decides only what its operator saw: the hash is not optional.
                raise forms.ValidationError(f"{value!r} does not carry an arguments hash.")
            hashes[int(call_id)] = digest
        return hashes
