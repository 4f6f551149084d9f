"""Writes on tasks, one module per concern: limits, submission, idempotency, lifecycle, feedback.

Callers import from the module that owns the service (``tasks.services.lifecycle.task_complete``); the
money side of each write is ledger.services.
"""
