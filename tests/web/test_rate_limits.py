"""Password guessing at the login forms: failures counted per username and per client
address, then 429 with a retry time, an audit event and a log line."""

from __future__ import annotations

import http.cookiejar
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.conf import global_settings
from django.core.cache import cache
from django.test import Client

from agentdash.models import AuditEvent
from agentdash.ratelimit import LOGIN_BY_ADDRESS, LOGIN_BY_USERNAME, Rate
from tests.live.conftest import REDIS_HOST, REDIS_PORT, redis_answers

pytestmark = pytest.mark.django_db

ATTACKER = "203.0.113.66"
BYSTANDER = "198.51.100.20"


@pytest.fixture(autouse=True)
def _fresh_counts(settings):
    """The counts live in the cache, which outlives a test: none leak in or out. And a
    fast password hasher: these tests log in dozens of times, and the real one is slow
    on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    yield
    cache.clear()


def log_in(username: str, password: str, *, address: str = ATTACKER, path: str = "/login/"):
    client = Client(REMOTE_ADDR=address)
    response = client.post(path, {"username": username, "password": password})
    return response, client


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_five_bad_passwords_lock_the_username_with_a_retry_time(operator, caplog):
    for _ in range(4):
        response, _ = log_in("olivia", "guess")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.text

    locking, _ = log_in("olivia", "guess")  # the fifth
    response, client = log_in("olivia", "pw-olivia-123")  # right, but too late

    for refused in (locking, response):
        assert refused.status_code == 429
        assert 0 < int(refused["Retry-After"]) <= 60
        assert f"Try again in {refused['Retry-After']} seconds" in refused.text
    assert not logged_in(client)
    assert "Please enter a correct username and password" in locking.text  # it was wrong
    assert "Please enter a correct username and password" not in response.text  # unchecked
    (event,) = AuditEvent.objects.filter(kind="auth.locked_out")
    assert event.actor == "ratelimit"
    assert event.payload["username"] == "olivia"
    assert event.payload["address"] == ATTACKER
    assert event.payload["scope"] == "login-username"
    assert "Locked out for" in caplog.text


def test_failing_under_someones_name_does_not_lock_them_out_elsewhere(operator, viewer):
    """Anyone can type an operator's name: a lock on the name alone would let them keep
    the operator out, and the approvals waiting."""
    for _ in range(5):
        log_in("olivia", "guess")

    from_elsewhere, olivia = log_in("olivia", "pw-olivia-123", address=BYSTANDER)
    other_user, victor = log_in("victor", "pw-victor-123")

    assert from_elsewhere.status_code == 302
    assert logged_in(olivia)
    assert other_user.status_code == 302
    assert logged_in(victor)


def test_counts_survive_a_guesser_filling_the_cache_with_other_names(operator, settings):
    """The embedded default counts in process memory: throwaway usernames must not evict
    (and so reset) the count of the name being guessed."""
    settings.AGENTDASH_LOGIN_IP_RATE = "0"
    for _ in range(4):
        log_in("olivia", "guess")
    for n in range(400):
        log_in(f"throwaway{n}", "guess")

    assert log_in("olivia", "guess")[0].status_code == 429


def test_one_address_trying_many_usernames_is_locked_out(operator, settings):
    settings.AGENTDASH_LOGIN_IP_RATE = "6/m"
    for n in range(6):
        response, _ = log_in(f"user{n}", "guess")
    assert response.status_code == 429

    right, client = log_in("olivia", "pw-olivia-123")
    elsewhere, other = log_in("olivia", "pw-olivia-123", address=BYSTANDER)

    assert right.status_code == 429
    assert not logged_in(client)
    assert elsewhere.status_code == 302
    assert logged_in(other)
    assert AuditEvent.objects.filter(
        kind="auth.locked_out", payload__scope="login-address"
    ).exists()


def test_the_lockout_ends_with_its_window(operator, settings):
    settings.AGENTDASH_LOGIN_RATE = "2/3s"
    for _ in range(2):
        log_in("olivia", "guess")
    refused = log_in("olivia", "pw-olivia-123")[0]
    assert refused.status_code == 429

    time.sleep(int(refused["Retry-After"]) + 0.2)
    response, client = log_in("olivia", "pw-olivia-123")

    assert response.status_code == 302
    assert logged_in(client)


def test_a_count_that_outlived_its_window_locks_for_one_window_not_forever(settings):
    settings.AGENTDASH_LOGIN_IP_RATE = "2/1s"
    counter, _ = LOGIN_BY_ADDRESS._keys(ATTACKER)
    cache.set(counter, 2, timeout=None)  # at the limit, with no end, as a racing incr() leaves it

    assert LOGIN_BY_ADDRESS.retry_after(ATTACKER) == 1
    time.sleep(1.3)

    assert LOGIN_BY_ADDRESS.retry_after(ATTACKER) is None


def test_a_count_made_anew_without_a_timeout_still_ends_with_its_window(settings, monkeypatch):
    settings.AGENTDASH_LOGIN_IP_RATE = "3/1s"
    counter, _ = LOGIN_BY_ADDRESS._keys(ATTACKER)

    def incr_on_an_expired_key(key: str, delta: int = 1) -> int:
        cache.set(key, delta, timeout=None)  # what Redis's INCR does with a missing key
        return delta

    monkeypatch.setattr(cache, "add", lambda *args, **kwargs: False)  # there a moment ago
    monkeypatch.setattr(cache, "incr", incr_on_an_expired_key)
    LOGIN_BY_ADDRESS.fail(ATTACKER)
    monkeypatch.undo()
    time.sleep(1.3)

    assert cache.get(counter) is None


def test_a_successful_login_does_not_hide_failures_from_the_address_limit(operator, settings):
    settings.AGENTDASH_LOGIN_IP_RATE = "3/m"
    log_in("olivia", "guess")
    log_in("olivia", "guess")
    assert log_in("olivia", "pw-olivia-123")[0].status_code == 302

    assert log_in("someone", "guess")[0].status_code == 429


def test_the_admin_login_is_limited_too(django_user_model):
    django_user_model.objects.create_superuser("sam", password="pw-sam-123")
    for _ in range(5):
        log_in("sam", "guess", path="/admin/login/")

    response, client = log_in("sam", "pw-sam-123", path="/admin/login/")

    assert "Too many failed attempts" in response.text
    assert not logged_in(client)


def test_limits_can_be_turned_off(operator, settings):
    settings.AGENTDASH_LOGIN_RATE = "0"
    settings.AGENTDASH_LOGIN_IP_RATE = ""
    for _ in range(30):
        log_in("olivia", "guess")

    assert log_in("olivia", "pw-olivia-123")[0].status_code == 302


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("5/m", Rate(5, 60)),
        ("20/minute", Rate(20, 60)),
        ("100/h", Rate(100, 3600)),
        ("10/30s", Rate(10, 30)),
        (" 3 / 5m ", Rate(3, 300)),
        ("1/day", Rate(1, 86400)),
        ("0/m", None),
        ("", None),
    ],
)
def test_rates_are_written_as_failures_per_period(text, rate):
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["five a minute", "5", "5/fortnight", "-1/m", "5/m/s"])
def test_a_rate_that_cannot_be_read_is_an_error_not_a_silent_default(text):
    with pytest.raises(ValueError, match="Not a rate"):
        Rate.parse(text)


@pytest.mark.redis
def test_on_redis_every_process_counts_the_same_failures(operator, settings):
    """With REDIS_URL the counts live in Redis: a second process (here, a second cache
    connection) sees the failures the first one counted."""
    if not redis_answers():
        pytest.skip(f"needs Redis at {REDIS_HOST}:{REDIS_PORT}")
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
            "KEY_PREFIX": f"agentdash-test-{time.monotonic_ns()}",
        }
    }
    from django.core.cache import caches

    settings.AGENTDASH_LOGIN_IP_RATE = "3/m"
    try:
        for n in range(3):
            log_in(f"user{n}", "guess")
        caches.close_all()  # a fresh connection, as another process would have

        assert log_in("olivia", "pw-olivia-123")[0].status_code == 429
        assert LOGIN_BY_ADDRESS.retry_after(ATTACKER) is not None
    finally:
        # Not clear(): on Redis it empties the whole database, which others share.
        LOGIN_BY_ADDRESS.reset(ATTACKER)
        for n in range(3):
            LOGIN_BY_USERNAME.reset(f"user{n}\0{ATTACKER}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_behind_a_proxy_each_client_is_counted_by_its_own_address(operator, settings, tmp_path):
    """Behind a reverse proxy every connection comes from the proxy: without its headers
    one guesser would lock out everyone. With AGENTDASH_PROXY_HEADERS=1, `serve` reads
    the client's address from X-Forwarded-For."""
    # The server checks passwords with the product's hashers, not this module's fast one.
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    operator.set_password("pw-olivia-123")
    operator.save()
    from tests.e2e.server import serving
    from tests.subprocesses import database_url

    def log_in_through(server, password: str, client_address: str) -> int:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar), _NoRedirects()
        )  # a 302 is the answer looked for, not a page to go to
        headers = {"X-Forwarded-For": client_address}
        opener.open(urllib.request.Request(f"{server.url}/login/", headers=headers), timeout=10)
        token = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
        form = {"username": "olivia", "password": password, "csrfmiddlewaretoken": token}
        request = urllib.request.Request(
            f"{server.url}/login/",
            data=urllib.parse.urlencode(form).encode(),
            headers=headers | {"Referer": f"{server.url}/login/"},
        )
        try:
            return opener.open(request, timeout=10).status
        except urllib.error.HTTPError as answer:
            return answer.code

    environment = {"AGENTDASH_PROXY_HEADERS": "1"}
    with serving(var_dir=tmp_path, database_url=database_url(), environment=environment) as server:
        statuses = [log_in_through(server, "guess", ATTACKER) for _ in range(5)]
        assert statuses[-1] == 429
        assert log_in_through(server, "pw-olivia-123", ATTACKER) == 429
        assert log_in_through(server, "pw-olivia-123", BYSTANDER) == 302


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
