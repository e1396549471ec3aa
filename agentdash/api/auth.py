"""Who is calling: `Authorization: Bearer <token>` with a per-user API token.

The API and /metrics share this. A request that authenticates acts as the token's
user, with exactly the permissions that user has in the browser. Tokens that do not
authenticate are counted per client address (agentdash/ratelimit.py); over the rate,
every token from that address is refused, unchecked, until the window ends.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from agentdash import ratelimit
from agentdash.models import ApiToken
from agentdash.models.tokens import RevokedToken

UNAUTHENTICATED = "Send an API token: Authorization: Bearer <token>."
# Which of these it is, is not said: that would tell a guesser which tokens exist.
BAD_BEARER = "This API token is not valid: mistyped, deleted, or its user deactivated."


class TooManyFailedTokens(AuthenticationError):
    """429: this address sent too many tokens that did not authenticate. An
    AuthenticationError, so that whoever refuses a bad token refuses this too."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(status_code=429, message=ratelimit.retry_message(retry_after))
        self.retry_after = retry_after


class ApiTokenAuth(HttpBearer):
    """ninja's bearer scheme, backed by ApiToken. Returns the user, or None (401: no
    bearer token); raises AuthenticationError (401, saying what is wrong with the token
    sent) and TooManyFailedTokens (429)."""

    def authenticate(self, request: HttpRequest, token: str) -> AbstractBaseUser | None:
        limit = ratelimit.API_TOKEN_BY_ADDRESS
        address = ratelimit.client_address(request)
        if (wait := limit.retry_after(address)) is not None:
            raise TooManyFailedTokens(wait)
        try:
            row = ApiToken.authenticate(token)
        except RevokedToken as revoked:
            _count_failure(address)
            raise AuthenticationError(message=str(revoked)) from None
        if row is None:
            _count_failure(address)
            raise AuthenticationError(message=BAD_BEARER)
        # The services (decide, cancel, ...) take the acting user from the request.
        request.user = row.user
        return row.user


def _count_failure(address: str) -> None:
    """Count a token that did not authenticate; raises TooManyFailedTokens when it was
    the failure that locks the address."""
    limit = ratelimit.API_TOKEN_BY_ADDRESS
    if (seconds := limit.fail(address)) is not None:
        ratelimit.record_lockout(limit, seconds, address=address)
        raise TooManyFailedTokens(seconds)


def token_user(request: HttpRequest) -> AbstractBaseUser | None:
    """The user behind the request's bearer token, or None when it sends none; raises
    AuthenticationError for a token that does not authenticate, TooManyFailedTokens once
    the address is locked out."""
    return ApiTokenAuth()(request)
