"""Webhooks: where to tell the outside world that a call waits, and every try to do so.

Endpoints are managed in the Django admin. Delivery (signing, retries) lives in
agentdash/notifications.py; these rows are its record.
"""

from __future__ import annotations

import secrets

from django.db import models

# The events an endpoint can subscribe to: "<kind>.<state>" as the audit log names them.
WEBHOOK_EVENTS = ("toolcall.pending_approval", "toolcall.expired")


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def _all_events() -> list[str]:
    return list(WEBHOOK_EVENTS)


class WebhookEndpoint(models.Model):
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=2000, help_text="Receives a JSON POST for each event.")
    secret = models.CharField(
        max_length=200,
        default=_new_secret,
        help_text="Shared with the receiver, which checks X-Agentdash-Signature with it.",
    )
    events = models.JSONField(default=_all_events, help_text="Which events to send.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def subscribed_to(cls, event: str) -> list[WebhookEndpoint]:
        """The active endpoints that want `event`.

        Filtered in Python: SQLite has no JSON containment lookup, and there are few
        endpoints."""
        endpoints = cls.objects.filter(active=True)
        return [endpoint for endpoint in endpoints if event in endpoint.events]


class WebhookDelivery(models.Model):
    """One event for one endpoint: its payload, and how the tries went."""

    class Status(models.TextChoices):
        PENDING = "pending"  # not yet delivered; next_attempt_at says when it is tried
        DELIVERED = "delivered"
        FAILED = "failed"  # given up: a refusal, or out of attempts

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=100)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            # The worker's sweep looks for overdue pending tries every few seconds.
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="webhookdelivery_pending_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.endpoint_id} ({self.status})"
