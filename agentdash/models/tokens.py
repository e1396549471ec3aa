"""Per-user API tokens for the HTTP API and /metrics.

A token reads `agd_<prefix>_<secret>`: the prefix (12 hex characters) names the row
and is kept in clear so that operators can tell their tokens apart; the secret is 32
random bytes. Only the SHA-256 of the whole token is stored. A fast hash is right
here, unlike for passwords: with 256 bits of entropy there is nothing to guess, so
slowing each guess down buys nothing, and every API request pays for the hash.

The full token exists only in the answer to `ApiToken.issue()`; it cannot be shown
again. A token acts as its user, with that user's permissions, until it is revoked
or the user is deactivated.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone

# Every token starts "agd_", so that logs and secret scanners can recognise one.
MARK = "agd"
PREFIX_HEX_CHARS = 12
SECRET_BYTES = 32
# Prefixes drawn before issue() gives up: with 48 bits, a second collision in a row
# would say that something other than chance is at work.
PREFIX_DRAWS = 3
# What a well-formed token looks like (token_urlsafe(32) is 43 characters). Anything
# else is refused before the database is asked.
_TOKEN_SHAPE = re.compile(rf"{MARK}_(?P<prefix>[0-9a-f]{{{PREFIX_HEX_CHARS}}})_[A-Za-z0-9_-]{{43}}")
# last_used_at is refreshed at most this often, so that a busy client does not turn
# every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class RevokedToken(Exception):
    """The token is genuine but was revoked: the caller may say so."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'pager bot'.")
    prefix = models.CharField(max_length=PREFIX_HEX_CHARS, unique=True, editable=False)
    hashed_secret = models.CharField(
        max_length=64, editable=False, help_text="SHA-256 of the whole token, hex."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({MARK}_{self.prefix}_…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def issue(cls, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
        """A new token for `user`: the row, and the full token to hand over once."""
        draws = 0
        while True:
            draws += 1
            prefix = secrets.token_hex(PREFIX_HEX_CHARS // 2)
            token = f"{MARK}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
            try:
                with transaction.atomic():
                    row = cls.objects.create(
                        user=user, name=name, prefix=prefix, hashed_secret=_digest(token)
                    )
            except IntegrityError:
                # Two tokens drew the same prefix: draw again. Any other failure (e.g. the
                # user was deleted meanwhile) would only fail again, forever.
                if draws < PREFIX_DRAWS and cls.objects.filter(prefix=prefix).exists():
                    continue
                raise
            return row, token

    @classmethod
    def authenticate(cls, token: str) -> ApiToken | None:
        """The live token that `token` is, with its active user loaded; else None.

        Raises RevokedToken when the token is genuine but revoked. The secret is
        compared in constant time; the prefix, which is no secret, finds the row.
        """
        shape = _TOKEN_SHAPE.fullmatch(token)
        if shape is None:
            return None
        row = cls.objects.select_related("user").filter(prefix=shape["prefix"]).first()
        if row is None or not hmac.compare_digest(row.hashed_secret, _digest(token)):
            return None
        if row.is_revoked:
            raise RevokedToken(f"The API token {row.name!r} was revoked.")
        if not row.user.is_active:
            return None
        row._touch()
        return row

    def _touch(self) -> None:
        now = timezone.now()
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        if type(self).objects.filter(stale, pk=self.pk).update(last_used_at=now):
            self.last_used_at = now

    def revoke(self) -> bool:
        """Revoke the token now; False when it already was."""
        now = timezone.now()
        changed = (
            type(self).objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=now)
        )
        if changed:
            self.revoked_at = now
        return bool(changed)
