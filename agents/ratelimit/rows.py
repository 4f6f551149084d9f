"""The one row per key that the limiters and breakers keep in the database, locked for a change."""

from __future__ import annotations

from typing import TypeVar

from django.db import IntegrityError, models, transaction

Row = TypeVar("Row", bound=models.Model)


def locked_row(model: type[Row], key: str, what: str, **initial: object) -> Row:
    """``key``'s row of ``model`` under a row lock (inside the caller's transaction), created with
    ``initial`` values when it does not exist yet; ``what`` names it in the error if that fails twice."""
    for _ in range(2):
        row = model._default_manager.select_for_update().filter(key=key).first()
        if row is not None:
            return row
        try:
            with transaction.atomic():
                return model._default_manager.create(key=key, **initial)
        except IntegrityError:
            continue  # another worker created it first: lock theirs
    raise RuntimeError(f"could not create the {what} {key!r}")
