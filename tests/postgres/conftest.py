"""PostgreSQL-only tests: real row locks and concurrent connections that SQLite's single writer hides."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _needs_postgresql() -> None:
    from django.db import connection

    if connection.vendor == "postgresql":
        return
    if os.environ.get("AICP_TEST_POSTGRES") == "1":
        # The PostgreSQL pass must never turn green by skipping everything.
        pytest.fail("AICP_TEST_POSTGRES=1 but DATABASE_URL does not point at PostgreSQL")
    pytest.skip("needs PostgreSQL: run `make services test-postgres`")
