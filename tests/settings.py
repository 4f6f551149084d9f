"""Test settings: the environment is prepared before aicp.settings reads it, so every run is isolated.

Subprocesses started by tests (a real qcluster, gunicorn) use this module too, with their own overrides
in the environment (e.g. AICP_Q_SYNC=0) — setdefault leaves those alone.
"""

import os
import tempfile
from pathlib import Path

_TEST_ROOT = Path(os.environ.get("AICP_TEST_ROOT") or tempfile.mkdtemp(prefix="aicp-tests-"))
os.environ.setdefault("AICP_TEST_ROOT", str(_TEST_ROOT))
os.environ.setdefault("AICP_DATA_DIR", str(_TEST_ROOT / "data"))
os.environ.setdefault("AICP_TEST_SQLITE_PATH", str(_TEST_ROOT / "test.sqlite3"))
os.environ.setdefault("AICP_Q_SYNC", "1")
os.environ.setdefault("AICP_TASK_RETRY_DELAY_S", "0")
os.environ.setdefault("AICP_LLM_BACKOFF_S", "0.01")
os.environ.setdefault("AICP_THROTTLE_REGISTER", "10000/minute")
os.environ.setdefault("AICP_THROTTLE_TOKEN", "10000/minute")
# Loading the sentence encoder takes seconds; tests that want embeddings on record opt in.
os.environ.setdefault("DUKE_ENCODE_ON_RECORD", "0")
if os.environ.get("AICP_TEST_KEEP_LLM_ENV") != "1":
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ.pop("OPENAI_BASE_URL", None)
if os.environ.get("AICP_TEST_POSTGRES") != "1":
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("AICP_REDIS_URL", None)

from aicp.settings import *  # noqa: E402, F403

# Password hashing dominates user-heavy tests; the algorithm is not what they test.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Transactional tests flush the database; one without serialized_rollback re-creates content types and
# permissions (post_migrate) under new ids, which then collide with the serialized copy the
# serialized_rollback tests restore. Those two apps are re-created on demand, so they are not serialized.
TEST_NON_SERIALIZED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
