"""WSGI entry point (HTTP only; the live layer needs ASGI)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentdash.settings")
application = get_wsgi_application()
