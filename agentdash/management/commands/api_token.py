"""`manage.py api_token create|list|revoke`: per-user tokens for the HTTP API and /metrics.

python manage.py api_token create --user alice --name "pager bot"   # prints the token, once
python manage.py api_token list [--user alice]
python manage.py api_token revoke PREFIX
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from agentdash.models import ApiToken


class Command(BaseCommand):
    help = "Create, list and revoke API tokens."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        create = sub.add_parser("create", help="Make a token; prints it (shown only this once).")
        create.add_argument("--user", required=True)
        create.add_argument("--name", required=True, help="What it is for, e.g. 'pager bot'.")
        listing = sub.add_parser("list", help="Tokens with their prefix, use and state.")
        listing.add_argument("--user")
        revoke = sub.add_parser("revoke", help="Revoke a token by its prefix.")
        revoke.add_argument("prefix", help="The 12 characters after 'agd_', as list shows.")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['action']}")(options)

    def _create(self, options: dict[str, Any]) -> None:
        users = get_user_model()
        try:
            user = users.objects.get_by_natural_key(options["user"])
        except users.DoesNotExist:
            raise CommandError(f"No user {options['user']!r}.") from None
        name = options["name"].strip()
        if not name or len(name) > ApiToken._meta.get_field("name").max_length:
            raise CommandError("--name must be 1 to 100 characters.")
        _, token = ApiToken.issue(user, name)
        self.stderr.write("Keep this token now: it cannot be shown again.")
        self.stdout.write(token)

    def _list(self, options: dict[str, Any]) -> None:
        tokens = ApiToken.objects.select_related("user")
        if options["user"]:
            tokens = tokens.filter(user__username=options["user"])
        for token in tokens:
            used = (
                f"last used {token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "unused"
            )
            state = f"revoked {token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else "active"
            self.stdout.write(
                f"{token.prefix}  {token.user.get_username()}  {token.name!r}  {used}  {state}"
            )

    def _revoke(self, options: dict[str, Any]) -> None:
        token = ApiToken.objects.filter(prefix=options["prefix"]).first()
        if token is None:
            raise CommandError(f"No token with prefix {options['prefix']!r}.")
        if not token.revoke():
            raise CommandError(f"Token {token.prefix} ({token.name!r}) was already revoked.")
        self.stdout.write(f"Revoked {token.prefix} ({token.name!r}).")
