"""The Django admin for tokens and webhooks: list, revoke, configure, send again."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agentdash.models import ApiToken, WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("ada", password="pw-ada-123"))
    return client


def test_tokens_are_listed_and_revoked_but_never_made_or_shown_there(admin_client, operator):
    row, token = ApiToken.issue(operator, "pager bot")
    changelist = reverse("admin:agentdash_apitoken_changelist")

    page = admin_client.get(changelist).content.decode()
    assert "pager bot" in page
    assert row.prefix in page
    assert token not in page
    assert admin_client.get(reverse("admin:agentdash_apitoken_add")).status_code == 403

    admin_client.post(changelist, {"action": "revoke", "_selected_action": [row.pk]})

    row.refresh_from_db()
    assert row.is_revoked


def test_an_endpoint_is_configured_with_its_events_as_checkboxes(admin_client):
    response = admin_client.post(
        reverse("admin:agentdash_webhookendpoint_add"),
        {
            "name": "chat bot",
            "url": "https://hooks.example.com/agentdash",
            "secret": "s3cret",
            "events": ["toolcall.expired"],
            "active": "on",
        },
    )

    assert response.status_code == 302, response.content
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["toolcall.expired"]
    assert endpoint.subscribed_to("toolcall.expired") == [endpoint]
    assert endpoint.subscribed_to("toolcall.pending_approval") == []


def test_deliveries_are_a_read_only_record_that_can_be_sent_again(admin_client):
    endpoint = WebhookEndpoint.objects.create(name="pager", url="http://127.0.0.1:9/x")
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event="toolcall.expired", payload={}, status="failed", attempts=6
    )
    changelist = reverse("admin:agentdash_webhookdelivery_changelist")
    assert "toolcall.expired" in admin_client.get(changelist).content.decode()

    admin_client.post(changelist, {"action": "send_again", "_selected_action": [delivery.pk]})

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
