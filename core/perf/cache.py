"""The shared file cache (login and sign-up throttles, django-q2's cluster stats, Duke's encoder lease),
culled at most once a second per thread.

Switch: AICP_PERF_CACHE_CULL (off: Django's FileBasedCache). Measured: listing the directory on every
write was 40% of a submission's time in its throttle (commit 608626c), when the throttle used the cache.

Django's FileBasedCache lists its whole directory on every write to decide whether to cull. When
POST /tasks still wrote its buyer's throttle history here, that listing, run by 16 threads of two web
workers at once, was 40% of the time a submission spent in its throttle (the submit throttle now counts
from the tasks table). Between culls the cache can only pass MAX_ENTRIES by what one second's writes
add, and the next cull brings it back.
"""

from __future__ import annotations

import time

from django.core.cache.backends.filebased import FileBasedCache

CULL_EVERY_S = 1.0


class FileCache(FileBasedCache):
    _last_cull = float("-inf")

    def _cull(self) -> None:
        now = time.monotonic()
        if now - self._last_cull < CULL_EVERY_S:
            return
        self._last_cull = now
        super()._cull()
