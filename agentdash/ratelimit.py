"""Limits on failed authentication: passwords at the login forms, tokens at the API.

A `FailureLimit` counts failures per key (a username, a client address) in Django's
cache. The first failure opens a window of `rate.seconds`; the `rate.limit`-th failure
inside it locks the key until that window ends, and `retry_after()` says how long
that is. While locked, the caller refuses without even checking the credentials, so a
guesser learns nothing more, and failures are no longer counted (a lockout does not
grow). A success does not unlock an address: only the window's end does.

Where the counts live (settings.CACHES): with REDIS_URL set, Redis, which every web
process shares (a guesser spreading attempts over several processes is counted once);
otherwise the embedded default's in-process memory, which is right there because the
embedded default is one process. Counting uses the cache's atomic add and incr.

The rates are settings (AGENTDASH_LOGIN_RATE, AGENTDASH_LOGIN_IP_RATE,
AGENTDASH_API_TOKEN_RATE) written like "5/m": five failures per minute.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest

from agentdash import audit

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(?P<limit>\d+)\s*/\s*(?P<count>\d*)\s*(?P<unit>[smhd])[a-z]*\s*$")


@dataclass(frozen=True)
class Rate:
    limit: int  # failures allowed in one window; the next one is refused
    seconds: int  # the window's length

    @classmethod
    def parse(cls, text: str | None) -> Rate | None:
        """ "5/m", "20/minute", "100/h", "10/30s", "3/5m"; empty or "0/...": no limit."""
        if not text or text.strip() in ("", "0"):
            return None
        match = _RATE.match(text.lower())
        if match is None:
            raise ValueError(
                f"Not a rate: {text!r}. Write failures per period, like 5/m, 20/minute or 100/h."
            )
        limit = int(match["limit"])
        if limit == 0:
            return None
        return cls(limit=limit, seconds=int(match["count"] or 1) * _UNITS[match["unit"]])


def _start_window(counter: str, window_end: str, rate: Rate) -> None:
    """A window of `rate` from now: the counter ends with it, its end a second later."""
    cache.touch(counter, rate.seconds)
    cache.set(window_end, time.time() + rate.seconds, timeout=rate.seconds + 1)


class FailureLimit:
    """Failures of one kind (`scope`), counted per key, against the rate in the setting
    named `setting` (read at each use, so tests and operators can change it)."""

    def __init__(self, scope: str, setting: str) -> None:
        self.scope = scope
        self.setting = setting

    @property
    def rate(self) -> Rate | None:
        try:
            return Rate.parse(getattr(settings, self.setting))
        except ValueError as error:
            raise ValueError(f"{self.setting}: {error}") from None

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until `key` may try again, or None when it may now."""
        rate = self.rate
        if rate is None:
            return None
        counter, window_end = self._keys(key)
        values = cache.get_many([counter, window_end])
        failures, ends_at = values.get(counter, 0), values.get(window_end)
        if failures < rate.limit:
            return None
        if ends_at is None:
            # Evicted, or set() never ran, or the counter outlived its window (Redis's
            # incr() can make it anew, without a timeout, when it expires between the
            # cache's EXISTS and INCR): a whole window from now, which both keys end.
            _start_window(counter, window_end, rate)
            return rate.seconds
        remaining = ends_at - time.time()
        return math.ceil(remaining) if remaining > 0 else None

    def fail(self, key: str) -> int | None:
        """Count one failure of `key`. Returns the lockout's length in whole seconds when
        this failure is the one that locks it, else None."""
        rate = self.rate
        if rate is None:
            return None
        counter, window_end = self._keys(key)
        # add() is atomic and only the first failure of a window succeeds at it.
        cache.add(counter, 0, timeout=rate.seconds)
        try:
            failures = cache.incr(counter)
        except ValueError:  # the window ended between add() and incr(): a new one
            cache.add(counter, 0, timeout=rate.seconds)
            failures = cache.incr(counter)
        if failures == 1:
            # A window's first failure, however its counter came to be: Redis's incr()
            # makes an expired key anew, without a timeout, when it expires between the
            # cache's EXISTS and INCR. Both keys end with the window; its end a second
            # later, so that a locked key always has it.
            _start_window(counter, window_end, rate)
        if failures != rate.limit:
            return None
        return self.retry_after(key) or rate.seconds

    def reset(self, key: str) -> None:
        cache.delete_many(list(self._keys(key)))

    def _keys(self, key: str) -> tuple[str, str]:
        # Hashed: keys are what attackers type (any length, any characters), and cache
        # backends limit both.
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        base = f"agentdash:failures:{self.scope}:{digest}"
        return base, base + ":until"


# Passwords for one username from one address, and from one address for any username.
# Not a username from anywhere: anyone could then keep an operator locked out (and the
# approvals waiting) just by failing five times a minute under the operator's name.
LOGIN_BY_USERNAME = FailureLimit("login-username", "AGENTDASH_LOGIN_RATE")
LOGIN_BY_ADDRESS = FailureLimit("login-address", "AGENTDASH_LOGIN_IP_RATE")
# API tokens (and /metrics tokens) that do not authenticate, from one address.
API_TOKEN_BY_ADDRESS = FailureLimit("api-token-address", "AGENTDASH_API_TOKEN_RATE")


def client_address(request: HttpRequest) -> str:
    """The address the request came from, as the server saw it. Forwarded-for headers
    are not read here: anyone can send them. Behind a reverse proxy, set
    AGENTDASH_PROXY_HEADERS=1 and `serve` has Daphne put the client's in REMOTE_ADDR."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def record_lockout(limit: FailureLimit, seconds: int, **details: str) -> None:
    """A key was just locked: say so in the log and in the audit log. `details` name who
    was locked out (the username, the address) and stay out of the key itself."""
    logger.warning(
        "Locked out for %s s after too many failures (%s): %s",
        seconds,
        limit.scope,
        ", ".join(f"{name}={value!r}" for name, value in details.items()),
    )
    rate = limit.rate
    with transaction.atomic():
        audit.record(
            "auth.locked_out",
            actor="ratelimit",
            payload={
                "scope": limit.scope,
                "seconds": seconds,
                "rate": f"{rate.limit}/{rate.seconds}s" if rate else "",
                **details,
            },
        )


def retry_message(seconds: int) -> str:
    return f"Too many failed attempts. Try again in {seconds} second{'s' if seconds != 1 else ''}."
