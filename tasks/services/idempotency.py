"""Idempotent submission: one task and one hold per (buyer, Idempotency-Key), and the first response
replayed exactly."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.exceptions import (
    Conflict,
    Unprocessable,
)
from ledger.services import (
    buyer_accounts_lock,
)
from tasks.models import IdempotencyKey, Task
from tasks.services.limits import SubmitLimit
from tasks.services.submission import TaskRequest, task_submit
from users.models import User

logger = logging.getLogger("tasks")


@dataclass(frozen=True)
class SubmitResult:
    task: Task
    status_code: int
    body: dict
    replayed: bool


class _KeyTakenConcurrently(Exception):
    """A concurrent request with the same key committed between our lookup and our insert."""


_LATER_FIELDS = {"callback_url": "", "priority": "normal"}  # issue 21


def request_fingerprint(request: TaskRequest) -> str:
    """sha256 of the canonical JSON of the validated input: the same request hashes the same however sent."""
    fields = asdict(request)
    # Fields added later count only when set: a request without them hashes as it did before they existed,
    # so a key stored before an upgrade still replays.
    for name, default in _LATER_FIELDS.items():
        if fields.get(name) == default:
            del fields[name]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _find_key(*, user_id: int, key: str) -> IdempotencyKey | None:
    return IdempotencyKey.objects.select_related("task").filter(user_id=user_id, key=key).first()


@transaction.atomic
def _submit_once_with_key(
    *,
    buyer: User,
    request: TaskRequest,
    key: str,
    render: Callable[[Task], dict],
    limit: SubmitLimit | None,
) -> SubmitResult:
    def create() -> tuple[Task, dict]:
        task = task_submit(buyer=buyer, request=request, limit=limit)
        return task, render(task)

    return _once_with_key(buyer=buyer, key=key, fingerprint=request_fingerprint(request), create=create)


def _once_with_key(
    *, buyer: User, key: str, fingerprint: str, create: Callable[[], tuple[Task, dict]]
) -> SubmitResult:
    """In the caller's transaction: the first response under (buyer, key) replayed, or ``create``'s tasks
    written with the key and their response (``create`` returns the task the key row points at and the
    response body). Shared by POST /tasks and POST /tasks/batch: one key space per buyer."""
    # Locking the buyer's accounts serialises this buyer's submissions (PostgreSQL; SQLite's IMMEDIATE
    # transactions already do): a duplicate that arrives while the first is in flight waits here, then sees
    # the committed key and replays.
    buyer_accounts_lock(user_id=buyer.pk)
    now = timezone.now()
    IdempotencyKey.objects.filter(
        user=buyer, created_at__lt=now - timedelta(hours=settings.AICP_IDEMPOTENCY_TTL_H)
    ).delete()
    existing = _find_key(user_id=buyer.pk, key=key)
    if existing is not None:
        if existing.request_hash != fingerprint:
            raise Unprocessable(
                "This Idempotency-Key was already used with a different request body. "
                "Use a new key for a new task.",
                code="idempotency_key_reused",
            )
        return SubmitResult(
            task=existing.task,
            status_code=existing.response_status,
            body=existing.response_body,
            replayed=True,
        )
    task, rendered = create()
    body = json.loads(json.dumps(rendered, cls=DjangoJSONEncoder))
    try:
        with transaction.atomic():
            IdempotencyKey.objects.create(
                user=buyer,
                key=key,
                request_hash=fingerprint,
                task=task,
                response_status=201,
                response_body=body,
            )
    except IntegrityError:
        if not IdempotencyKey.objects.filter(user=buyer, key=key).exists():
            raise
        raise _KeyTakenConcurrently from None
    return SubmitResult(task=task, status_code=201, body=body, replayed=False)


def task_submit_idempotent(
    *,
    buyer: User,
    request: TaskRequest,
    key: str,
    render: Callable[[Task], dict],
    limit: SubmitLimit | None = None,
) -> SubmitResult:
    """task_submit guarded by an Idempotency-Key: one task and one hold per (buyer, key), ever.

    A replay creates no task, so the submit limit never refuses it.

    The key row is written in the task's transaction with the rendered first response, so a replay returns
    exactly that response; the same key with a different body is refused (422).
    """
    for _ in range(2):
        try:
            return _submit_once_with_key(buyer=buyer, request=request, key=key, render=render, limit=limit)
        except _KeyTakenConcurrently:
            # Our task and hold were rolled back with the transaction; the next pass replays the winner.
            continue
    raise Conflict(
        "Another request with this Idempotency-Key is still being processed; retry shortly.",
        code="idempotency_in_progress",
    )


def idempotent(
    *, buyer: User, key: str, fingerprint: str, create: Callable[[], tuple[Task, dict]]
) -> SubmitResult:
    """Any submission guarded by an Idempotency-Key (POST /tasks/batch): ``create`` runs at most once per
    (buyer, key), in one transaction with the key row; a replay returns the first response, another
    ``fingerprint`` under the same key is a 422 (see task_submit_idempotent)."""
    for _ in range(2):
        try:
            with transaction.atomic():
                return _once_with_key(buyer=buyer, key=key, fingerprint=fingerprint, create=create)
        except _KeyTakenConcurrently:
            continue
    raise Conflict(
        "Another request with this Idempotency-Key is still being processed; retry shortly.",
        code="idempotency_in_progress",
    )
