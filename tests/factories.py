"""Test data builders."""

from __future__ import annotations

from decimal import Decimal

from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from tasks.services.submission import TaskRequest, task_submit
from users.services import buyer_register

DEFAULT_PASSWORD = "a-Strong-pass-42"


def make_buyer(username: str, *, password: str = DEFAULT_PASSWORD):
    return buyer_register(username=username, password=password)


def authenticated_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def submit(
    buyer,
    description: str = "Summarise this.",
    *,
    complexity: int = 1,
    labels=None,
    task_type: str = "",
    agent: str = "auto",
):
    return task_submit(
        buyer=buyer,
        request=TaskRequest(
            description=description,
            complexity=complexity,
            task_type=task_type,
            labels=tuple(labels) if labels else None,
            agent=agent,
        ),
    )


def money(value: str) -> Decimal:
    return Decimal(value)
