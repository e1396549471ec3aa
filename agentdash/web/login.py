"""The login forms (the dashboard's and the admin's), limited against password guessing,
and the middleware that sends every page to them.

Failed logins are counted per username and per client address (agentdash/ratelimit.py).
Once either is over its rate, the form refuses without checking the password, says
when to try again, and the dashboard's login page answers 429 with Retry-After; the
lockout is logged and written to the audit log.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import middleware
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django_htmx.http import HttpResponseClientRedirect

from agentdash import ratelimit

RATE_LIMITED = "rate_limited"


class RateLimitedLogin:
    """Mixed into an AuthenticationForm: `locked_for` holds the seconds to wait when the
    form refused because of the limits."""

    request: Any
    cleaned_data: dict[str, Any]
    locked_for: int | None = None

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        address = ratelimit.client_address(self.request)
        counted = [
            (ratelimit.LOGIN_BY_USERNAME, f"{username.strip().casefold()}\0{address}"),
            (ratelimit.LOGIN_BY_ADDRESS, address),
        ]
        waits = [wait for limit, key in counted if (wait := limit.retry_after(key)) is not None]
        if waits:
            self._refuse(max(waits))
        try:
            return super().clean()  # type: ignore[misc]
        except ValidationError as error:
            if error.code == "invalid_login":
                self._count_failure(counted, username)
            raise

    def _count_failure(
        self, counted: list[tuple[ratelimit.FailureLimit, str]], username: str
    ) -> None:
        address = ratelimit.client_address(self.request)
        lockouts = []
        for limit, key in counted:
            if (seconds := limit.fail(key)) is not None:
                ratelimit.record_lockout(limit, seconds, username=username[:150], address=address)
                lockouts.append(seconds)
        if lockouts:
            # This try's password was wrong too: say so, then that the next must wait.
            self._refuse(max(lockouts), first=self.get_invalid_login_error())  # type: ignore[attr-defined]

    def _refuse(self, seconds: int, *, first: ValidationError | None = None) -> None:
        self.locked_for = seconds
        refusal = ValidationError(ratelimit.retry_message(seconds), code=RATE_LIMITED)
        raise ValidationError([first, refusal]) if first is not None else refusal


class LoginForm(RateLimitedLogin, AuthenticationForm):
    pass


class AdminLoginForm(RateLimitedLogin, AdminAuthenticationForm):
    pass


class LoginView(auth_views.LoginView):
    form_class = LoginForm

    def form_invalid(self, form: LoginForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.locked_for is not None:
            response.status_code = 429
            response["Retry-After"] = str(form.locked_for)
        return response


class LoginRequiredMiddleware(middleware.LoginRequiredMiddleware):
    """Django's, but a request htmx makes (a button on a page whose login has ended, in
    another tab or by expiry) sends the whole page to the login form, and back to that
    page afterwards: a plain redirect would have htmx put the login page where the
    button's answer goes."""

    def handle_no_permission(self, request: HttpRequest, view_func: Any) -> HttpResponse:
        page = request.htmx.current_url_abs_path if request.htmx else None  # type: ignore[attr-defined]
        if page is None:  # not htmx, or a page of another site
            return super().handle_no_permission(request, view_func)
        login = redirect_to_login(
            page, self.get_login_url(view_func), self.get_redirect_field_name(view_func)
        )
        return HttpResponseClientRedirect(login.url)
