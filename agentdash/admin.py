"""Django admin: API tokens (list and revoke), webhook endpoints and their deliveries, and
the policy's rules."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from agentdash import notifications, policy
from agentdash.models import ApiToken, PolicyRule, WebhookDelivery, WebhookEndpoint
from agentdash.models.webhooks import WEBHOOK_EVENTS
from agentdash.policy_forms import PolicyRuleForm


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["user", "prefix", "created_at", "last_used_at", "revoked_at"]
    fields = ["name", *readonly_fields]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A token is shown once, when made: `manage.py api_token create` prints it.
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = sum(token.revoke() for token in queryset)
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)


class WebhookEndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=[(event, event) for event in WEBHOOK_EVENTS],
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["name", "url", "secret", "events", "active"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["name", "url", "active", "created_at"]
    list_filter = ["active"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "event",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["status", "event", "endpoint"]
    list_select_related = ["endpoint"]
    actions = ["send_again"]

    # The record of what was sent is not edited, only read (and sent again).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Send the selected deliveries again")
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            notifications.send_again(delivery)
        self.message_user(request, f"Queued {queryset.count()} delivery(ies) again.")


@admin.register(PolicyRule)
class PolicyRuleAdmin(admin.ModelAdmin):
    """Rules are checked, saved and deleted through agentdash.policy, so every change
    made here (the list's inline edits and bulk deletes too) is audited."""

    form = PolicyRuleForm
    list_display = ["position", "name", "action", "tool", "tag", "hint", "session", "enabled"]
    list_display_links = ["name"]
    list_editable = ["position", "enabled"]
    list_filter = ["action", "enabled", ("session", admin.EmptyFieldListFilter)]
    search_fields = ["name", "description", "tool", "tag"]
    raw_id_fields = ["session"]
    readonly_fields = ["created_by", "created_at", "updated_at"]
    fields = [
        "name",
        "description",
        "session",
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
        *readonly_fields,
    ]

    def save_model(
        self, request: HttpRequest, obj: PolicyRule, form: forms.ModelForm, change: bool
    ) -> None:
        policy.save_rule(obj, user=request.user)

    def delete_model(self, request: HttpRequest, obj: PolicyRule) -> None:
        policy.delete_rule(obj, user=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PolicyRule]) -> None:
        for rule in queryset:
            policy.delete_rule(rule, user=request.user)
