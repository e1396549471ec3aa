"""The policy's rules in the Django admin: checked like the dashboard's form, and audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agentdash.models import AuditEvent, PolicyRule
from tests.governance.helpers import make_rule

pytestmark = pytest.mark.django_db

RULE = {
    "name": "no secrets",
    "position": "0",
    "enabled": "on",
    "tag": "fs",
    "conditions": '[{"kind": "path", "glob": "secrets/**"}]',
    "action": "deny",
    "approvals_required": "1",
}


def test_a_rule_added_in_the_admin_is_saved_and_audited(admin_client, admin_user):
    response = admin_client.post(reverse("admin:agentdash_policyrule_add"), RULE)

    assert response.status_code == 302, response.context["adminform"].form.errors
    rule = PolicyRule.objects.get()
    assert rule.created_by == admin_user
    assert AuditEvent.objects.get(kind="policy.rule_created").actor == "user:admin"


def test_the_admin_refuses_a_rule_that_could_not_be_applied(admin_client):
    bad = RULE | {"conditions": '[{"kind": "command", "pattern": "("}]', "tag": "code"}
    response = admin_client.post(reverse("admin:agentdash_policyrule_add"), bad)

    assert response.status_code == 200
    assert "not a valid regular expression" in response.text
    assert not PolicyRule.objects.exists()


def test_bulk_deletes_in_the_admin_are_audited_one_by_one(admin_client):
    rules = [make_rule(tool="list_dir", action="deny", position=n) for n in range(2)]
    response = admin_client.post(
        reverse("admin:agentdash_policyrule_changelist"),
        {"action": "delete_selected", "_selected_action": [r.pk for r in rules], "post": "yes"},
    )

    assert response.status_code == 302
    assert not PolicyRule.objects.exists()
    deleted = AuditEvent.objects.filter(kind="policy.rule_deleted")
    assert sorted(e.payload["rule_id"] for e in deleted) == [r.pk for r in rules]
