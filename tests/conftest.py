"""Shared fixtures. The environment is set before Django's settings load, so every test is isolated."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_TEST_ROOT = Path(tempfile.mkdtemp(prefix="aicp-tests-"))
os.environ.setdefault("AICP_DATA_DIR", str(_TEST_ROOT / "data"))
os.environ.setdefault("AICP_TEST_SQLITE_PATH", str(_TEST_ROOT / "test.sqlite3"))
os.environ.setdefault("AICP_Q_SYNC", "1")
os.environ.setdefault("AICP_TASK_RETRY_DELAY_S", "0")
os.environ.setdefault("AICP_LLM_BACKOFF_S", "0.01")
os.environ.setdefault("AICP_THROTTLE_REGISTER", "10000/minute")
os.environ.setdefault("AICP_THROTTLE_TOKEN", "10000/minute")
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)
os.environ.pop("DATABASE_URL", None) if os.environ.get("AICP_TEST_POSTGRES") != "1" else None

import pytest  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

pytest_plugins = ["tests.fixtures_llm"]


@pytest.fixture(autouse=True)
def _isolated_settings(settings, tmp_path) -> None:
    settings.DUKE_MODEL_DIR = tmp_path / "duke-models"


@pytest.fixture
def llm_settings(settings, llm_simulator):
    """Points every LLM agent at the simulator fixture."""
    settings.OPENAI_BASE_URL = llm_simulator.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.AICP_LLM_TIMEOUT_S = 5.0
    return llm_simulator


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def buyer(db):
    from tests.factories import make_buyer

    return make_buyer("buyer-one")


@pytest.fixture
def other_buyer(db):
    from tests.factories import make_buyer

    return make_buyer("buyer-two")


@pytest.fixture
def operator(db):
    from users.models import User

    return User.objects.create_user(username="operator", password="operator-pass-123", is_staff=True)


@pytest.fixture
def buyer_client(buyer) -> APIClient:
    from tests.factories import authenticated_client

    return authenticated_client(buyer)


@pytest.fixture
def other_client(other_buyer) -> APIClient:
    from tests.factories import authenticated_client

    return authenticated_client(other_buyer)


@pytest.fixture
def operator_client(operator) -> APIClient:
    from tests.factories import authenticated_client

    return authenticated_client(operator)
