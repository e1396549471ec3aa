"""The rule editor's form, for the dashboard's pages and the Django admin alike.

    form = PolicyRuleForm(request.POST or None, instance=rule, session=session)
    if form.is_valid():
        rows = form.preview(last=50)      # what it would change, nothing saved
        rule = form.save_by(request.user) # saved and audited

Validation is the model's (PolicyRule.clean, i.e. agentdash.policy.validate_rule): a
bad pattern, an unknown tool or a condition on an argument that no matched tool has
comes back as an error on its field.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import AbstractBaseUser
from django.forms.fields import InvalidJSONInput, JSONString

from agentdash import policy
from agentdash.json_input import load_storable_json
from agentdash.models import AgentSession, PolicyRule

CONDITIONS_HELP = (
    "A JSON list; all must hold. "
    '{"kind": "path", "argument": "path", "glob": "secrets/**"}, '
    '{"kind": "host", "argument": "url", "host": "*.example.com"}, '
    '{"kind": "command", "argument": "command", "pattern": "\\\\brm\\\\s+-rf"}, '
    '{"kind": "number", "argument": "timeout_seconds", "min": 0, "max": 60}.'
)


class StorableJSONField(forms.JSONField):
    """Django's JSON field, refusing as a field error what the database would refuse on
    save (NaN, 1e999, "\\u0000", ...) and what json.loads raises more than
    JSONDecodeError for (load_storable_json)."""

    def to_python(self, value: Any) -> Any:
        if self.disabled or isinstance(value, JSONString) or not isinstance(value, str):
            return super().to_python(value)  # disabled, or already parsed: not typed text
        if value in self.empty_values:
            return None
        parsed = load_storable_json(value)
        # What Django's field returns for a JSON string, so as not to parse it again.
        return JSONString(parsed) if isinstance(parsed, str) else parsed

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Refused text is shown as typed: parsing it again here would raise the same
        # errors, and a lone surrogate written back into the page could not be encoded.
        if isinstance(data, str) and not self.disabled:
            try:
                load_storable_json(data)
            except forms.ValidationError:
                return InvalidJSONInput(data)
        return super().bound_data(data, initial)


class PolicyRuleForm(forms.ModelForm):
    """A rule's fields. A per-session rule is edited with `session=`; otherwise a new
    rule is global."""

    class Meta:
        model = PolicyRule
        fields = [
            "name",
            "description",
            "position",
            "enabled",
            "tool",
            "tag",
            "hint",
            "conditions",
            "action",
            "required_group",
            "approvals_required",
            "four_eyes",
            "expires_after",
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "conditions": forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        }
        help_texts = {"conditions": CONDITIONS_HELP}
        field_classes = {"conditions": StorableJSONField}

    def __init__(self, *args: Any, session: AgentSession | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if session is not None:
            # Before validation, which checks the rule against this session's tools.
            self.instance.session = session
        # A page may show the approval options only for `ask` rules.
        self.fields["approvals_required"].required = False

    def clean_approvals_required(self) -> int:
        return self.cleaned_data["approvals_required"] or 1

    def clean_conditions(self) -> Any:
        # An emptied textarea means no conditions, not the JSON value null.
        conditions = self.cleaned_data["conditions"]
        return [] if conditions is None else conditions

    def preview(self, *, last: int = 50) -> list[policy.PreviewRow]:
        """What the rule, as entered, would have decided for the latest calls; valid
        forms only. Nothing is saved."""
        if not self.is_valid():
            raise ValueError("Only a valid rule can be previewed.")
        return policy.preview_rule(self.instance, last=last)

    def save_by(self, user: AbstractBaseUser | None) -> PolicyRule:
        """Save the rule and audit the change in `user`'s name; valid forms only."""
        if not self.is_valid():
            raise ValueError("Only a valid rule can be saved.")
        return policy.save_rule(self.instance, user=user)
