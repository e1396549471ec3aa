"""ASGI entry point: Django for HTTP, Channels for the live pages' websockets.

On the embedded default the step worker runs as a thread of this same process (the
in-memory channel layer reaches only this process's sockets). `manage.py serve`
starts it before serving; any other server of this application (`daphne
agentdash.asgi:application`, Channels' live-server test case) starts it with the first
connection. Either way, once per process, and only if AGENTDASH_INPROCESS_WORKER.
"""

import os
import threading
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentdash.settings")
# Django is set up before anything below imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from agentdash.live.routing import websocket_application  # noqa: E402
from agentdash.worker import StepWorker  # noqa: E402

_worker_lock = threading.Lock()
_worker_started = False


def start_in_process_worker() -> bool:
    """Start this process's step worker thread, unless settings turn it off or it runs
    already. Returns whether one runs."""
    global _worker_started
    if not settings.AGENTDASH_INPROCESS_WORKER:
        return False
    with _worker_lock:
        if not _worker_started:
            StepWorker().start_thread()
            _worker_started = True
    return True


router = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": websocket_application(),
    }
)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if not _worker_started:
        start_in_process_worker()
    await router(scope, receive, send)
