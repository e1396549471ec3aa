"""/api/v1/: the API's routes, exempt from the login redirect (a token authenticates).

django-ninja does not know LoginRequiredMiddleware (vitalik/django-ninja#1461), which
would send a client without a browser session to the login page. Every route but the
docs page is marked login_not_required here; each operation then demands a token
itself and answers 401 JSON. The schema, /api/v1/openapi.json, is public: it holds
no data. The docs page is for people and stays behind the login like every page.
"""

from django.contrib.auth.decorators import login_not_required
from django.urls import URLPattern, path

from agentdash.api.endpoints import api

# Built once: each access to api.urls makes new view functions.
api_urls = api.urls
for pattern in api_urls[0]:
    assert isinstance(pattern, URLPattern), "the API is one flat set of routes"
    if pattern.name != "openapi-view":  # the docs page
        login_not_required(pattern.callback)

urlpatterns = [path("", api_urls)]
