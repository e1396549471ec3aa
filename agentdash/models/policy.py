"""Policy rules: what decides a tool call before it runs, without asking anyone or by asking.

A rule matches a tool (by name or glob, tag, behaviour hint) and conditions on the
call's validated arguments, and says allow, ask or deny; `agentdash.policy` compiles
the enabled rules, caches them per process and applies them (the order and the
defaults are described there). Editing goes through `agentdash.policy.save_rule()` and
`delete_rule()`, which audit the change; whatever path changes a rule, the ORM here
also changes `PolicyVersion` in the same transaction, so that no process keeps
deciding with rules that no longer exist.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connection, models, transaction

from agentdash.models.sessions import AgentSession


class PolicyVersion(models.Model):
    """A single row whose token changes with every change to any rule.

    Caches compare tokens, not numbers: a token never comes back, even after a test
    database is flushed or a transaction that changed a rule is rolled back, so a cache
    can never mistake old rules for current ones.
    """

    token = models.UUIDField(default=uuid.uuid4)

    def __str__(self) -> str:
        return f"policy version {self.token}"

    @classmethod
    def bump(cls) -> None:
        """Give the rules a new token, in the caller's transaction."""
        while not cls.objects.filter(pk=1).update(token=uuid.uuid4()):
            # Only a flushed database lacks the row (migration 0003 creates it);
            # get_or_create survives a concurrent creator, and the loop then updates.
            cls.objects.get_or_create(pk=1)

    @classmethod
    def current(cls) -> str:
        """The token now, as 32 hex digits. A database without the row (a flushed test
        database) gets one with a new token, which no cache can be holding."""
        # Plain SQL: the runner asks at every model reply, and on SQLite building the
        # ORM's query costs twenty times running it (190 µs against 10).
        with connection.cursor() as cursor:
            cursor.execute(_TOKEN_SQL)
            row = cursor.fetchone()
        token = row[0] if row is not None else cls.objects.get_or_create(pk=1)[0].token
        # SQLite hands back hex, PostgreSQL a UUID: one form for the caches to compare.
        return uuid.UUID(str(token)).hex


# S608: the table's name comes from the model, never from input.
_TOKEN_SQL = f'SELECT "token" FROM "{PolicyVersion._meta.db_table}" WHERE "id" = 1'  # noqa: S608


class PolicyRuleQuerySet(models.QuerySet["PolicyRule"]):
    """Bulk changes (the admin's "delete selected", an `update()`) invalidate caches too."""

    def update(self, **kwargs: Any) -> int:
        with transaction.atomic(using=self.db):
            changed = super().update(**kwargs)
            PolicyVersion.bump()
        return changed

    def delete(self) -> tuple[int, dict[str, int]]:
        with transaction.atomic(using=self.db):
            deleted = super().delete()
            PolicyVersion.bump()
        return deleted


class PolicyRule(models.Model):
    """One rule. Session rules come before global ones; within each, lower position first.

    `conditions` is a list of JSON objects, one per condition, all of which must hold
    (agentdash.policy.Condition describes the four kinds). The approval options
    (required group, approvals required, four eyes, expiry) belong to `ask` rules only.
    """

    class Action(models.TextChoices):
        ALLOW = "allow", "allow: run without asking"
        ASK = "ask", "ask: an operator decides"
        DENY = "deny", "deny: never run"

    class Hint(models.TextChoices):
        READ_ONLY = "read_only", "read-only"
        DESTRUCTIVE = "destructive", "destructive"
        OPEN_WORLD = "open_world", "reaches outside the sandbox"

    name = models.CharField(max_length=200)
    description = models.TextField(
        blank=True, help_text="Why the rule exists. A model whose call it denies reads this."
    )
    session = models.ForeignKey(
        AgentSession,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="policy_rules",
        help_text="Empty: a global rule, for every session.",
    )
    position = models.IntegerField(default=0, help_text="Lower positions are tried first.")
    enabled = models.BooleanField(default=True)
    # Made by an operator's "approve and allow for this session" rather than by someone
    # editing policy: it never loosens a global rule that denies or asks more than one
    # operator's yes (agentdash.policy.RuleSet.decide).
    from_approval = models.BooleanField(default=False, editable=False)

    tool = models.CharField(
        max_length=200,
        blank=True,
        help_text="A tool's name, or a glob such as run_*. Empty: any tool.",
    )
    tag = models.CharField(max_length=100, blank=True, help_text="Empty: any tag.")
    hint = models.CharField(
        max_length=20,
        choices=Hint.choices,
        blank=True,
        help_text="Only tools with this behaviour hint. Empty: any.",
    )
    conditions = models.JSONField(default=list, blank=True)
    action = models.CharField(max_length=10, choices=Action.choices)

    # Only for `ask`.
    required_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        # A group that rules rely on cannot vanish: calls would silently need no one.
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Only members of this group (and superusers) may approve.",
    )
    approvals_required = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(2)]
    )
    four_eyes = models.BooleanField(
        default=False, help_text="The operator who started the session may not approve."
    )
    expires_after = models.DurationField(
        null=True,
        blank=True,
        help_text="How long a call waits for a decision (hh:mm:ss). Empty: the default.",
    )

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PolicyRuleQuerySet.as_manager()

    class Meta:
        ordering = ["position", "pk"]
        indexes = [
            # rules_for() reads one session's enabled rules (or the global ones).
            models.Index(fields=["session", "enabled"], name="policyrule_session_idx"),
        ]

    def __str__(self) -> str:
        return f"rule {self.pk} “{self.name}” ({self.action})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        with transaction.atomic():
            super().save(*args, **kwargs)
            PolicyVersion.bump()

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        with transaction.atomic():
            deleted = super().delete(*args, **kwargs)
            PolicyVersion.bump()
        return deleted

    @property
    def label(self) -> str:
        """How decisions and the audit log name this rule."""
        return f"rule:{self.pk}" if self.pk is not None else "rule:new"

    def clean(self) -> None:
        """Refuse what could not be applied: bad conditions, tools that do not exist,
        conditions on arguments the matched tools lack, approval options on a non-ask
        rule. Raises ValidationError with the problems by field."""
        from agentdash.policy import validate_rule

        validate_rule(self)
