"""agentdash settings: one module, read from the environment.

The embedded default (no environment at all) is SQLite in WAL mode, the in-memory
channel layer and a worker inside the web process. Scale-out sets DATABASE_URL
(PostgreSQL) and REDIS_URL (channels-redis) and runs separate `manage.py agent worker`
processes; the code is the same.
"""

import json
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("AGENTDASH_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


def _env_limit(name: str) -> int | None:
    """A positive whole number from the environment; unset, empty or 0: no limit."""
    return int(os.environ.get(name, "").strip() or 0) or None


def _secret_key() -> str:
    """The key from the environment or, for the embedded default, one kept in var/."""
    if key := os.environ.get("DJANGO_SECRET_KEY"):
        return key
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        import secrets

        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
CSRF_TRUSTED_ORIGINS = [
    origin for origin in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if origin
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "django_tasks_db",
    "ninja",  # the API docs page's own copy of Swagger UI (else it loads from a CDN)
    "agentdash",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "agentdash.web.login.LoginRequiredMiddleware",  # Django's, htmx-aware
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "agentdash.urls"
ASGI_APPLICATION = "agentdash.asgi.application"
WSGI_APPLICATION = "agentdash.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL, or SQLite in WAL mode with IMMEDIATE transactions so that
# concurrent writers queue on the busy timeout instead of failing with "locked".
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'agentdash.sqlite3'}", conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
        ),
    }
    # Channels' live-server tests run Daphne in another process: the test database must
    # be a file both can open. One per test run (children inherit the name through the
    # environment), so that runs side by side do not share it.
    _test_run = os.environ.setdefault("AGENTDASH_TEST_RUN", str(os.getpid()))
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test_agentdash_{_test_run}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: Redis when REDIS_URL is set (separate worker processes), otherwise the
# in-memory layer, which only reaches browsers connected to this same process.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, the same 5 s that a
            # consumer's blocking pop waits on the server: every idle socket's consumer
            # crashed (django/channels_redis#422). Longer, so a dead Redis still fails.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# The cache holds the failed-login and failed-token counts (agentdash/ratelimit.py). With
# REDIS_URL, Redis, so that every web process counts the same failures; otherwise this
# process's memory, enough for the embedded default's single process.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "agentdash",
        }
    }
else:
    # Room for every count: at LocMemCache's default 300 entries, a guesser's throwaway
    # usernames would evict (and so reset) the counts of the names being guessed.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 1_000_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# The largest message a browser may send on a live socket (the pages send none): a larger
# one closes the socket (4413). Daphne refuses any over 1 MiB before the consumer sees it.
AGENTDASH_WEBSOCKET_MAX_MESSAGE_BYTES = int(
    os.environ.get("AGENTDASH_WEBSOCKET_MAX_MESSAGE_BYTES", 256 * 1024)
)
# Failed logins allowed per window before the login forms refuse for the rest of it
# (429 with Retry-After, and an audit event): per username, and per client address.
# "5/m" is five per minute; "0" or empty turns a limit off. AGENTDASH_API_TOKEN_RATE is
# the same for API and /metrics requests whose token does not authenticate, per address.
AGENTDASH_LOGIN_RATE = os.environ.get("AGENTDASH_LOGIN_RATE", "5/m")
AGENTDASH_LOGIN_IP_RATE = os.environ.get("AGENTDASH_LOGIN_IP_RATE", "20/m")
AGENTDASH_API_TOKEN_RATE = os.environ.get("AGENTDASH_API_TOKEN_RATE", "20/m")
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads it to send X-CSRFToken
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Where each session's workspace lives (the file tools and sandbox runs share it).
AGENTDASH_WORKSPACES_DIR = Path(os.environ.get("AGENTDASH_WORKSPACES_DIR", VAR_DIR / "workspaces"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "agentdash": {"handlers": ["console"], "level": os.environ.get("AGENTDASH_LOG", "INFO")},
        "tools": {"handlers": ["console"], "level": os.environ.get("AGENTDASH_LOG", "INFO")},
        # A 500's traceback: Django's own console handler prints only with DEBUG on, and
        # the error page tells the operator to look here.
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}

# --- The durable runner ---------------------------------------------------------------
# A worker's claim on a session lapses this long after its last renewal (it renews every
# third of it while a step runs); a lapsed claim is how a dead worker's work is found.
AGENTDASH_LEASE_SECONDS = float(os.environ.get("AGENTDASH_LEASE_SECONDS", 30))
# Separate worker processes poll this often; the in-process worker is woken at once.
AGENTDASH_WORKER_POLL_SECONDS = float(os.environ.get("AGENTDASH_WORKER_POLL_SECONDS", 0.25))
AGENTDASH_SWEEP_SECONDS = float(os.environ.get("AGENTDASH_SWEEP_SECONDS", 10))
# Run the worker inside the web server process (the embedded default).
AGENTDASH_INPROCESS_WORKER = _env_bool("AGENTDASH_INPROCESS_WORKER", True)
# Behind a reverse proxy: take the client's address (rate limits, logs) from the proxy's
# X-Forwarded-For/-Port/-Proto headers, which `serve` then has Daphne read. Off by default:
# without a proxy that sets them, any client could claim any address.
AGENTDASH_PROXY_HEADERS = _env_bool("AGENTDASH_PROXY_HEADERS", False)
# How often a running tool checks whether its session was cancelled.
AGENTDASH_CANCEL_POLL_SECONDS = 0.2
# Runs of an idempotent call that was interrupted by a dying worker, in all.
AGENTDASH_MAX_ATTEMPTS = 2
# Tool arguments larger than this are not kept verbatim in the database (nor sent back
# to the model); AGENTDASH_MAX_TOOL_INPUT_BYTES (below) is the limit on what runs.
AGENTDASH_MAX_STORED_ARGUMENT_BYTES = 100_000
AGENTDASH_MAX_OUTPUT_TOKENS = 8192
AGENTDASH_SYSTEM_PROMPT = (
    "You are an agent working in a sandboxed workspace through the tools you are given. "
    "Some tool calls need an operator's approval; if one is rejected, read the reason "
    "and adapt. When the goal is reached, say so plainly."
)

# --- Governance: approvals and rate limits (agentdash/policy.py, approvals.py) ---------
# How long a call waits for its decision before it expires (a rule may say otherwise).
AGENTDASH_APPROVAL_TIMEOUT_SECONDS = float(
    os.environ.get("AGENTDASH_APPROVAL_TIMEOUT_SECONDS", 30 * 60)
)
# Four eyes everywhere: nobody approves calls of a session they started (rules can ask
# for it on their own calls too).
AGENTDASH_FOUR_EYES = _env_bool("AGENTDASH_FOUR_EYES", False)
# Over a limit a call waits (its session is re-queued for later); nothing fails. Unset or
# empty: no limit. Tool calls a session may start per minute (a session may set its own):
AGENTDASH_SESSION_CALLS_PER_MINUTE = _env_limit("AGENTDASH_SESSION_CALLS_PER_MINUTE")
# Calls of one tool, all sessions together, per minute, as JSON: {"http_fetch": 30}.
AGENTDASH_TOOL_CALLS_PER_MINUTE: dict[str, int] = json.loads(
    os.environ.get("AGENTDASH_TOOL_CALLS_PER_MINUTE") or "{}"
)
# Tool calls running at once, all workers together.
AGENTDASH_MAX_RUNNING_TOOLS = _env_limit("AGENTDASH_MAX_RUNNING_TOOLS")
# A session held back by the running-tools cap tries again this much later.
AGENTDASH_RATE_LIMIT_RETRY_SECONDS = 1.0

# --- LLM providers (agentdash/providers) ---------------------------------------------
# API keys and endpoints are not settings: the providers read the SDKs' own environment
# (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, OPENAI_API_KEY, OPENAI_BASE_URL) when a
# session's provider is built, so a gateway or a local server can stand in.

# USD per million tokens. Prices change: edit here, or set AGENTDASH_MODEL_PRICES to a
# JSON object of the same shape, which is merged over this table. A model that is not
# listed costs 0 (with a warning in the log); cache prices default to the input price.
AGENTDASH_MODEL_PRICES: dict[str, dict[str, str]] = {
    "claude-sonnet-5-5": {"input": "2", "output": "10", "cache_read": "0.20", "cache_write": "2.5"},
    "claude-haiku-5-5": {
        "input": "0.10",
        "output": "0.50",
        "cache_read": "0.01",
        "cache_write": "0.125",
    },
    "claude-opus-5-5": {"input": "4", "output": "20", "cache_read": "0.40", "cache_write": "5"},
    # OpenAI-compatible examples; local servers (Ollama, vLLM) cost nothing per token.
    "gpt-4.1": {"input": "2", "output": "8", "cache_read": "0.50"},
    "gpt-4.1-mini": {"input": "0.40", "output": "1.60", "cache_read": "0.10"},
    "gpt-4o-mini": {"input": "0.15", "output": "0.60", "cache_read": "0.075"},
    "llama3.2": {"input": "0", "output": "0"},
    "scripted": {"input": "0", "output": "0"},
}
if _prices_json := os.environ.get("AGENTDASH_MODEL_PRICES"):
    AGENTDASH_MODEL_PRICES |= json.loads(_prices_json)

AGENTDASH_DEFAULT_MODELS = {
    "anthropic": os.environ.get("AGENTDASH_ANTHROPIC_MODEL", "claude-sonnet-5-5"),
    "openai": os.environ.get("AGENTDASH_OPENAI_MODEL", "gpt-4.1-mini"),
    "scripted": "scripted",
}
# The SDKs retry 408/409/429/5xx and connection errors this many times, with
# exponential backoff that honours retry-after, before a session ends with the error.
AGENTDASH_PROVIDER_MAX_RETRIES = int(os.environ.get("AGENTDASH_PROVIDER_MAX_RETRIES", "3"))
# A stream that began (HTTP 200) and then failed before any of the reply arrived is
# retried by agentdash within the same budget (the SDKs retry only failed responses),
# first after this many seconds, doubled for each retry after it up to 8 s.
AGENTDASH_PROVIDER_RETRY_DELAY = float(os.environ.get("AGENTDASH_PROVIDER_RETRY_DELAY", "0.5"))
# Seconds without a byte from the API before a call counts as timed out.
AGENTDASH_PROVIDER_TIMEOUT = float(os.environ.get("AGENTDASH_PROVIDER_TIMEOUT", "300"))
# Tool-call arguments larger than this are not used: the model is told to send less.
AGENTDASH_MAX_TOOL_INPUT_BYTES = int(os.environ.get("AGENTDASH_MAX_TOOL_INPUT_BYTES", "1000000"))
# --- end of LLM providers ------------------------------------------------------------
# Hosts the http_fetch tool may reach (comma-separated); empty means none.
AGENTDASH_HTTP_ALLOW_HOSTS = tuple(
    host.strip()
    for host in os.environ.get("AGENTDASH_HTTP_ALLOW_HOSTS", "").split(",")
    if host.strip()
)

# --- Integrations: the HTTP API, /metrics, webhooks -----------------------------------
# Where operators reach this dashboard; webhooks link to the approval queue under it.
AGENTDASH_PUBLIC_URL = os.environ.get("AGENTDASH_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
# A webhook delivery is tried this many times in all, waiting BACKOFF seconds, then
# twice that, and so on (at most BACKOFF_MAX) between tries; each try gives up after
# TIMEOUT seconds.
AGENTDASH_WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("AGENTDASH_WEBHOOK_MAX_ATTEMPTS", "6"))
AGENTDASH_WEBHOOK_BACKOFF_SECONDS = float(os.environ.get("AGENTDASH_WEBHOOK_BACKOFF_SECONDS", "10"))
AGENTDASH_WEBHOOK_BACKOFF_MAX_SECONDS = 3600.0
AGENTDASH_WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("AGENTDASH_WEBHOOK_TIMEOUT_SECONDS", "5"))
