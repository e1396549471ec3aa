"""`manage.py serve`: the product on the embedded default, in one process.

Migrates, creates the first admin on an empty database (printing its one-time
password: only its hash is stored), starts the step worker inside this process unless
AGENTDASH_INPROCESS_WORKER is off, and serves HTTP and websockets with Daphne.
"""

from __future__ import annotations

import secrets
from argparse import ArgumentParser
from typing import Any

from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from agentdash import toolbox


class Command(BaseCommand):
    help = "Run agentdash (web server and, by default, its worker) in this process."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-migrate", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        self._ensure_admin()
        from agentdash.asgi import application, start_in_process_worker

        # Now rather than at the first request: sessions queued meanwhile advance at once.
        start_in_process_worker()
        toolbox.announce_sandbox()
        url = f"http://{options['host']}:{options['port']}/"
        self.stdout.write(self.style.SUCCESS(f"agentdash is running at {url}"))
        self.stdout.flush()

        Server(
            application=application,
            endpoints=build_endpoint_description_strings(
                host=options["host"], port=options["port"]
            ),
            signal_handlers=True,
            # Live pages send nothing: refuse big messages before buffering them.
            websocket_max_message_size=settings.AGENTDASH_WEBSOCKET_MAX_MESSAGE_BYTES,
            websocket_max_frame_size=settings.AGENTDASH_WEBSOCKET_MAX_MESSAGE_BYTES,
            **_proxy_headers(),
        ).run()

    def _ensure_admin(self) -> None:
        users = get_user_model()
        if users.objects.exists():
            self.stdout.write("Log in with your agentdash account.")
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser("admin", email="", password=password)
        self.stdout.write(
            "Created the first account. Log in as\n"
            f"    username: admin\n    password: {password}\n"
            "This password is shown only now (only its hash is stored); change it after "
            "logging in (/admin/password_change/)."
        )


def _proxy_headers() -> dict[str, str]:
    """Daphne's options for reading the client's address from a reverse proxy's headers."""
    if not settings.AGENTDASH_PROXY_HEADERS:
        return {}
    return {
        "proxy_forwarded_address_header": "X-Forwarded-For",
        "proxy_forwarded_port_header": "X-Forwarded-Port",
        "proxy_forwarded_proto_header": "X-Forwarded-Proto",
    }
