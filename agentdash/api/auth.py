"""Who is calling: `Authorization: Bearer <token>` with a per-user API token.

The API and /metrics share this. A request that authenticates acts as the token's
user, with exactly the permissions that user has in the browser.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from agentdash.models import ApiToken
from agentdash.models.tokens import RevokedToken

UNAUTHENTICATED = "Send an API token: Authorization: Bearer <token>."


class ApiTokenAuth(HttpBearer):
    """ninja's bearer scheme, backed by ApiToken. Returns the user, or None (401)."""

    def authenticate(self, request: HttpRequest, token: str) -> AbstractBaseUser | None:
        try:
            row = ApiToken.authenticate(token)
        except RevokedToken as revoked:
            raise AuthenticationError(message=str(revoked)) from None
        if row is None:
            return None
        # The services (decide, cancel, ...) take the acting user from the request.
        request.user = row.user
        return row.user


def token_user(request: HttpRequest) -> AbstractBaseUser | None:
    """The user behind the request's bearer token, or None; raises AuthenticationError
    for a revoked token."""
    return ApiTokenAuth()(request)
