"""Queue work handed over when a transaction commits, guarded so that it can never undo a committed write.

Every service enqueues its follow-up jobs (a drainer for new tasks, Duke's training, an audit) through
``enqueue_after_commit``. By then the write is committed: the task exists and its hold is taken. If the
broker refuses the job (Redis down or unreachable, the ORM broker's table locked past the busy timeout),
the error is logged as one line and swallowed, so that it can neither turn a created task into a 500 nor
make a caller (group commit) write the committed rows again. The work is not lost: what the job would
have done is recorded in the database, and the caller names who picks it up (for tasks, the lease reaper
asks for a drainer whenever claimable tasks wait, every minute).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

logger = logging.getLogger("aicp.queue")


def enqueue_after_commit(enqueue: Callable[[], object], *, what: str, recovery: str) -> None:
    """Runs ``enqueue`` when the current transaction commits (at once outside one); never raises from it.

    ``what``: the job, for the log (``"a drainer for 8 task(s)"``); ``recovery``: who does the work if the
    broker refuses it (``"the reaper asks for a drainer within 90 s"``).
    """
    # robust: should the guard itself fail, Django logs it and still runs the other callbacks.
    transaction.on_commit(lambda: enqueue_guarded(enqueue, what=what, recovery=recovery), robust=True)


def enqueue_guarded(enqueue: Callable[[], object], *, what: str, recovery: str) -> bool:
    """Runs ``enqueue`` now; on a broker error logs one line (no traceback) and returns False."""
    try:
        enqueue()
    except Exception as error:  # noqa: BLE001 - any broker failure: the committed write stands
        logger.warning(
            "Could not enqueue %s after commit (%s: %s); it stays recorded, %s",
            what,
            type(error).__name__,
            str(error)[:200],
            recovery,
        )
        return False
    return True
