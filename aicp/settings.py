"""AICP settings: one module, every value from the environment, safe defaults for development.

Production mode (`DJANGO_DEBUG=0`) refuses to start with an insecure configuration.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_float(
    name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from exc
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ImproperlyConfigured(f"{name}={value} must be within [{minimum}, {maximum}]")
    return value


def env_decimal(name: str, default: str, *, allow_empty: bool = False) -> Decimal | None:
    raw = os.environ.get(name, default)
    if allow_empty and raw.strip() == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a decimal amount") from exc
    if value < 0 or not value.is_finite():
        raise ImproperlyConfigured(f"{name}={raw!r} must be a non-negative amount")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- core -----------------------------------------------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", True)
# Public (it is in this file): fine on loopback, refused on any other address (aicp/checks.py).
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-secret-key-change-me-0123456789abcdefghijklmnop"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", DEVELOPMENT_SECRET_KEY if DEBUG else "")
if not DEBUG and (not SECRET_KEY or SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set to a random string of at least 50 characters when DJANGO_DEBUG=0"
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG=0")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

DATA_DIR = Path(env_str("AICP_DATA_DIR", str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

INSTALLED_APPS = [
    "aicp.apps.AicpAdminConfig",  # django.contrib.admin, with a site whose lists survive any filter
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "aicp",
    "users",
    "agents",
    "ledger",
    "tasks",
    "duke",
]

MIDDLEWARE = [
    # Outermost: sees every error answer, whichever layer made it (aicp/api_errors.py).
    "aicp.api_errors.JsonApiErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "aicp.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "aicp.urls"
WSGI_APPLICATION = "aicp.wsgi.application"
AUTH_USER_MODEL = "users.User"
# Staff users are operators: users.backends grants them the business apps' admin permissions.
AUTHENTICATION_BACKENDS = ["users.backends.OperatorBackend"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
APPEND_SLASH = False

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
                "aicp.context_processors.llm_backend",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------------------


def _database_from_url(url: str) -> dict:
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL scheme {parsed.scheme!r} is not supported (use postgresql://)"
        )
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": env_int("AICP_DB_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
    }


# --- the performance layer (core/perf/): one switch per trick; each gain in docs/ARCHITECTURE.md ----------
# Switched off, a trick gives way to the stock Django / DRF / gunicorn behaviour it replaces.
AICP_PERF_SQLITE_QUEUE = env_bool("AICP_PERF_SQLITE_QUEUE", True)  # core/perf/sqlite
AICP_PERF_WEB_WORKER = env_bool("AICP_PERF_WEB_WORKER", True)  # core/perf/web.py and heap.py
AICP_PERF_RAW_SQL = env_bool("AICP_PERF_RAW_SQL", True)  # core/perf/db.py (off: the ORM builds them)

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": _database_from_url(DATABASE_URL)}
else:
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN so two
    # writers queue on the busy timeout instead of failing with "database is locked" mid-transaction.
    # core.perf.sqlite is Django's backend with one process's writers taking turns on a mutex first
    # (see there).
    # Memory-mapped reads: each thread has its own connection, and a connection drops its page cache
    # whenever another one has written; re-reading pages through mmap instead of read() took POST /tasks
    # from 330 to 469 requests/s with 8 threads in one process (and the bare insert from 1,597 to 2,432).
    DATABASES = {
        "default": {
            "ENGINE": "core.perf.sqlite" if AICP_PERF_SQLITE_QUEUE else "django.db.backends.sqlite3",
            "NAME": env_str("AICP_SQLITE_PATH", str(DATA_DIR / "aicp.sqlite3")),
            # Kept open between requests: opening one costs more than many a request's own queries.
            "CONN_MAX_AGE": env_int("AICP_DB_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": env_int("AICP_SQLITE_BUSY_TIMEOUT_S", 30, minimum=1),
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                    f"PRAGMA mmap_size={env_int('AICP_SQLITE_MMAP_MB', 256, minimum=0) * 1024 * 1024};"
                ),
            },
            # Tests use a file (not :memory:) so that real qcluster processes can share the database.
            "TEST": {"NAME": env_str("AICP_TEST_SQLITE_PATH") or None},
        }
    }

# --- auth, API ------------------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"

# How many proxies in front of the web server append to X-Forwarded-For; the client is the address that
# many entries from the right (users/client_address.py). 0 (the default): the header is the client's own
# writing and is ignored, the socket's peer is the client. Too high a count lets clients pick their address.
AICP_TRUSTED_PROXIES = env_int("AICP_TRUSTED_PROXIES", 0, minimum=0)

THROTTLE_RATES = {
    "register": env_str("AICP_THROTTLE_REGISTER", "20/hour"),
    "token": env_str("AICP_THROTTLE_TOKEN", "60/minute"),
    "submit": env_str("AICP_THROTTLE_SUBMIT", "6000/minute"),
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "users.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "aicp.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": THROTTLE_RATES,
    "NUM_PROXIES": AICP_TRUSTED_PROXIES,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("AICP_JWT_ACCESS_MINUTES", 30, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("AICP_JWT_REFRESH_DAYS", 7, minimum=1)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "SIGNING_KEY": SECRET_KEY,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "AICP coordinator API",
    "DESCRIPTION": "Submit paid AI tasks, follow them to a result, and watch Duke learn.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from this site's static files: the docs render on a machine with no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "aicp.openapi.add_error_responses",
    ],
    # Tasks and Duke's versions both have a `status` enum; each gets its own name.
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "tasks.models.Task.Status",
        "ModelVersionStatusEnum": "duke.models.ModelVersion.Status",
    },
}

# --- static, i18n ---------------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("AICP_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("AICP_MAX_BODY_BYTES", 256 * 1024, minimum=1024)

# --- security (production) ------------------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("AICP_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("AICP_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- cache: shared by every process (throttles, django-q2 cluster stats) ---------------------------------

if env_str("AICP_REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env_str("AICP_REDIS_URL"),
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }

# --- queue (django-q2) ----------------------------------------------------------------------------------

AICP_REDIS_URL = env_str("AICP_REDIS_URL")
Q_CLUSTER: dict = {
    "name": "aicp",
    # Two drainers (the CPU-bound part, one per core) plus one worker for everything else.
    "workers": env_int("AICP_Q_WORKERS", 3, minimum=1),
    "recycle": 500,
    "timeout": env_int("AICP_Q_TIMEOUT_S", 600, minimum=10),
    "retry": env_int("AICP_Q_TIMEOUT_S", 600, minimum=10) + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": env_int("AICP_Q_SAVE_LIMIT", 1000, minimum=0),
    "poll": 0.1,
    "label": "Django Q2",
    "sync": env_bool("AICP_Q_SYNC", False),
}
if AICP_REDIS_URL:
    # A Redis that drops packets (rather than refusing) would hold an enqueue for the OS's TCP timeout; a
    # bounded connect lets the post-commit guard log and leave the task to the reaper within seconds.
    _redis_connect_timeout = "socket_connect_timeout=" + str(
        env_int("AICP_REDIS_CONNECT_TIMEOUT_S", 3, minimum=1)
    )
    Q_CLUSTER["redis"] = (
        AICP_REDIS_URL
        if "socket_connect_timeout" in AICP_REDIS_URL
        else AICP_REDIS_URL + ("&" if "?" in AICP_REDIS_URL else "?") + _redis_connect_timeout
    )
else:
    Q_CLUSTER["orm"] = "default"

# --- LLM ------------------------------------------------------------------------------------------------

OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL") or None
# Set by `manage.py run_system` when it started the bundled simulator, so every page and /health say so.
AICP_LLM_SIMULATED = env_bool("AICP_LLM_SIMULATED", not OPENAI_API_KEY)
AICP_LLM_TIMEOUT_S = env_float("AICP_LLM_TIMEOUT_S", 30.0, minimum=0.1)
AICP_LLM_MAX_ATTEMPTS = env_int("AICP_LLM_MAX_ATTEMPTS", 3, minimum=1)
AICP_LLM_BACKOFF_S = env_float("AICP_LLM_BACKOFF_S", 0.5, minimum=0.0)
AICP_TASK_MAX_ATTEMPTS = env_int("AICP_TASK_MAX_ATTEMPTS", 3, minimum=1)
AICP_TASK_RETRY_DELAY_S = env_float("AICP_TASK_RETRY_DELAY_S", 5.0, minimum=0.0)
# Recovery after a worker dies (tasks.execution.housekeeping): a claimed task's lease, renewed every few
# seconds by the drainer while its call runs (a slow call keeps its lease), and how often each queue
# worker's watchdog looks for leases that ran out. A dead worker's tasks run again within about
# lease + interval seconds.
AICP_TASK_LEASE_S = env_int("AICP_TASK_LEASE_S", 15, minimum=5)
AICP_REAPER_INTERVAL_S = env_float("AICP_REAPER_INTERVAL_S", 5.0, minimum=0.5)
AICP_DEFAULT_AGENT = env_str("AICP_DEFAULT_AGENT", "openai-gpt-4o-mini")
# How long a web process reuses a decoded JWT and the user row it read (core/perf/recent.py); 0 reads them
# every time. A change made in another process (deactivating a user) applies within this time.
AICP_RECENT_ROWS_S = env_float("AICP_RECENT_ROWS_S", 2.0, minimum=0.0)
# Submissions arriving while another group is being written go in the next group, one transaction for up
# to this many (core/perf/group_commit.py); 1 writes each on its own.
AICP_SUBMIT_GROUP_MAX = env_int("AICP_SUBMIT_GROUP_MAX", 32, minimum=1)
# Throughput: each drainer job keeps up to AICP_LLM_CONCURRENCY calls in flight; at most AICP_DRAINERS
# drainers run at once, each for a slice before yielding its worker. The default leaves one worker free:
# a drainer holds its worker for up to AICP_DRAIN_SLICE_S, and with every worker draining, Duke's training
# and encoding jobs (and audits) waited behind them: a 1,000-task demo trained its first version at 333
# samples instead of 100.
AICP_LLM_CONCURRENCY = env_int("AICP_LLM_CONCURRENCY", 64, minimum=1)
AICP_DRAINERS = env_int("AICP_DRAINERS", max(1, Q_CLUSTER["workers"] - 1), minimum=1)
AICP_DRAIN_SLICE_S = env_float("AICP_DRAIN_SLICE_S", 60.0, minimum=1.0)
# Client-side limits per agent, shared by all workers (database, or Redis with AICP_REDIS_URL); 0 = none.
AICP_RPM_LIMIT = env_int("AICP_RPM_LIMIT", 0, minimum=0)
AICP_TPM_LIMIT = env_int("AICP_TPM_LIMIT", 0, minimum=0)
AICP_RATE_BURST_S = env_float("AICP_RATE_BURST_S", 1.0, minimum=0.05)
# The circuit breaker opens after this many consecutive retryable failures of an agent.
AICP_BREAKER_FAILURES = env_int("AICP_BREAKER_FAILURES", 5, minimum=1)
AICP_BREAKER_COOLDOWN_S = env_float("AICP_BREAKER_COOLDOWN_S", 30.0, minimum=0.1)

# --- money ----------------------------------------------------------------------------------------------

AICP_SIGNUP_CREDIT = env_decimal("AICP_SIGNUP_CREDIT", "100.0000")
AICP_PLATFORM_FEE = env_decimal("AICP_PLATFORM_FEE", "0")  # a fraction of the price, e.g. 0.1
if AICP_PLATFORM_FEE >= 1:
    # A fee of the whole price or more would leave the agent nothing (or less than nothing) to earn.
    raise ImproperlyConfigured(f"AICP_PLATFORM_FEE={AICP_PLATFORM_FEE} is a fraction of the price: below 1")
AICP_DAILY_SPEND_CAP = env_decimal("AICP_DAILY_SPEND_CAP", "", allow_empty=True)
AICP_IDEMPOTENCY_TTL_H = env_int("AICP_IDEMPOTENCY_TTL_H", 24, minimum=1)
# Exact repeat answers (tasks/services/repeat.py): seconds an LLM answer to a labeling task is reused for an
# identical one (same task type, label set, normalised text); 0 turns the repeat store off. Default 7 days.
AICP_REPEAT_TTL = env_int("AICP_REPEAT_TTL", 7 * 24 * 3600, minimum=0)

# --- Duke -----------------------------------------------------------------------------------------------

DUKE_MODEL_DIR = Path(env_str("DUKE_MODEL_DIR", str(DATA_DIR / "duke-models")))
DUKE_TRAIN_EVERY = env_int("DUKE_TRAIN_EVERY", 100, minimum=1)
DUKE_MIN_VALIDATION = env_int("DUKE_MIN_VALIDATION", 50, minimum=1)
DUKE_TARGET_AGREEMENT = env_float("DUKE_TARGET_AGREEMENT", 0.95, minimum=0.5, maximum=1.0)
DUKE_AUDIT_RATE = env_float("DUKE_AUDIT_RATE", 0.05, minimum=0.0, maximum=1.0)
DUKE_VALIDATION_FRACTION = env_float("DUKE_VALIDATION_FRACTION", 0.2, minimum=0.05, maximum=0.5)
DUKE_ENCODE_ON_RECORD = env_bool("DUKE_ENCODE_ON_RECORD", True)
# Caps training epochs (0: the trainer's own budget and early stopping decide); tests use a few.
DUKE_MAX_EPOCHS = env_int("DUKE_MAX_EPOCHS", 0, minimum=0)

# Duke learning on real data (issue 18). A version needs DUKE_MIN_SAMPLES labeling samples and 2 of each
# label it learns. Routing thresholds are certified (Learn-then-Test): served agreement >= the target with
# probability >= 1 - DUKE_RISK_DELTA, per task type. DUKE_TRAIN_CONFIG: JSON overrides of
# duke.training.TrainConfig (e.g. '{"folds": 3}'), for operators and tests.
DUKE_MIN_SAMPLES = env_int("DUKE_MIN_SAMPLES", 50, minimum=2)
DUKE_RISK_DELTA = env_float("DUKE_RISK_DELTA", 0.05, minimum=0.001, maximum=0.5)
DUKE_TRAIN_CONFIG = json.loads(env_str("DUKE_TRAIN_CONFIG", "{}"))

# --- Duke at run time: preloading in web workers, learning in its own low-priority queue cluster ----------

# A web worker loads the production version (and the encoder) in a background thread at start and on every
# promotion, so no request loads a model (duke.serving). run_system turns it on for the web server only.
DUKE_PRELOAD = env_bool("DUKE_PRELOAD", False)
DUKE_PRELOAD_POLL_S = env_float("DUKE_PRELOAD_POLL_S", 1.0, minimum=0.05)
# Training and encoding jobs go to this django-q2 cluster (`Q_CLUSTER_NAME=<name> manage.py qcluster`, which
# run_system starts), whose workers run at DUKE_LEARNING_NICE, so paid execution always wins the CPU.
# Empty: they run on the main cluster beside the drainers (a deployment that starts only one cluster).
DUKE_LEARNING_CLUSTER = env_str("DUKE_LEARNING_CLUSTER", "")
DUKE_LEARNING_NICE = env_int("DUKE_LEARNING_NICE", 19, minimum=0)
# On Linux, also the idle scheduling class: it runs only on a core no other task wants.
DUKE_LEARNING_SCHED_IDLE = env_bool("DUKE_LEARNING_SCHED_IDLE", True)
# django-q2 requires ALT_CLUSTERS whenever Q_CLUSTER_NAME names another cluster than the main one.
Q_CLUSTER["ALT_CLUSTERS"] = {
    DUKE_LEARNING_CLUSTER or "duke": {
        # Two: a training never queues behind an encoding pass (the services keep one of each at a time).
        "workers": env_int("DUKE_LEARNING_WORKERS", 2, minimum=1),
        "poll": 0.5,
    }
}

# --- logging --------------------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line"}},
    "root": {"handlers": ["console"], "level": env_str("AICP_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
    },
}

# --- webhooks (issue 21 item 2) -------------------------------------------------------------------------

# Hosts (names or IP addresses, comma-separated) a callback_url may name over plain http, and whose private
# or loopback addresses are allowed; every other callback must be https to a public address.
AICP_WEBHOOK_ALLOW_HOSTS = env_list("AICP_WEBHOOK_ALLOW_HOSTS", "")
AICP_WEBHOOK_TIMEOUT_S = env_float("AICP_WEBHOOK_TIMEOUT_S", 5.0, minimum=0.05)
# Retries: exponential backoff from AICP_WEBHOOK_BACKOFF_S (doubled per attempt, capped at ..._MAX_S, with
# jitter), until AICP_WEBHOOK_RETRY_WINDOW_S after the first attempt; then the delivery gives up.
AICP_WEBHOOK_BACKOFF_S = env_float("AICP_WEBHOOK_BACKOFF_S", 10.0, minimum=0.0)
AICP_WEBHOOK_BACKOFF_MAX_S = env_float("AICP_WEBHOOK_BACKOFF_MAX_S", 3600.0, minimum=0.0)
AICP_WEBHOOK_RETRY_WINDOW_S = env_float("AICP_WEBHOOK_RETRY_WINDOW_S", 24 * 3600.0, minimum=0.0)

# --- Batch API priority (issue 21 item 4) ----------------------------------------------------------------

# A "priority": "batch" task is priced at its quote less this fraction of its estimated LLM token cost.
AICP_BATCH_DISCOUNT = env_decimal("AICP_BATCH_DISCOUNT", "0.5")
# At most this many tasks per Batch API job (one JSONL file).
AICP_BATCH_MAX_TASKS = env_int("AICP_BATCH_MAX_TASKS", 5000, minimum=1)
