"""Shared fixtures. The test environment itself is prepared in tests/settings.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from rest_framework.test import APIClient

pytest_plugins = ["tests.fixtures_llm"]

# The PostgreSQL + Redis pass (`make test-postgres`) selects by marker; marking by folder means a new test
# in these folders is part of that pass without anyone remembering to mark it.
_FOLDER_MARKERS = {
    "tasks": "money",
    "ledger": "money",
    "duke": "training",
    "faults": "cluster",
    "postgres": "postgres",
    "test_qcluster.py": "cluster",
}
_TESTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        try:
            folder = Path(item.path).resolve().relative_to(_TESTS_DIR).parts[0]
        except (ValueError, IndexError):
            continue
        if folder in _FOLDER_MARKERS:
            item.add_marker(_FOLDER_MARKERS[folder])


@pytest.fixture(autouse=True)
def _isolated_settings(settings, tmp_path) -> None:
    settings.DUKE_MODEL_DIR = tmp_path / "duke-models"


@pytest.fixture(autouse=True)
def _close_shared_connections():
    """Group commit's shared writing connection must not outlive a test (PostgreSQL drops the database)."""
    yield
    from core.perf.db import close_process_connections

    close_process_connections()


@pytest.fixture(autouse=True)
def _forget_recent_rows() -> None:
    """Each test starts with no remembered users or tokens (core/perf/recent.py): a row a previous test read
    belongs to a database state that was rolled back."""
    from users.authentication import recent_tokens, recent_users

    for rows in (recent_tokens, recent_users):
        rows.clear()


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
def default_agents(db) -> None:
    """The agents the data migration seeds. A transactional test's flush removes them, so restore them."""
    import importlib

    from agents.models import Agent

    seed = importlib.import_module("agents.migrations.0002_seed_default_agents")
    for fields in seed.DEFAULT_AGENTS:
        Agent.objects.get_or_create(name=fields["name"], defaults=fields)


@pytest.fixture
def buyer(db, default_agents):
    from tests.factories import make_buyer

    return make_buyer("buyer-one")


@pytest.fixture
def other_buyer(db, default_agents):
    from tests.factories import make_buyer

    return make_buyer("buyer-two")


@pytest.fixture
def operator(db, default_agents):
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
