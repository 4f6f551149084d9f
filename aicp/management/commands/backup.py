"""`manage.py backup [PATH]`: a consistent copy of the SQLite database, taken while the system runs.

SQLite's online backup API copies the database as of one moment (a read snapshot: in WAL mode writers
carry on meanwhile), so the copy never mixes a transaction's rows with the next one's, unlike copying
the file (and its -wal) with `cp`. The copy is written beside its destination, checked with
`PRAGMA integrity_check`, then renamed into place. PostgreSQL is refused: use `pg_dump`.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone

from core.progress import Progress

# Pages copied per backup step: small enough for the progress bar to move, large enough to be quick.
STEP_FRACTION = 50


class _SourceChanged(Exception):
    """A writer changed the source between two steps: SQLite restarted the copy."""


def backup_sqlite(source: Path, destination: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Copies `source` into `destination` (replaced atomically); returns what was copied.

    The copy goes in steps so `progress` can show pages copied, rate and time left. SQLite restarts a
    stepped copy whenever another connection writes to the source; on a busy system that could go on
    forever, so at the first restart the copy is taken in one step instead (one consistent snapshot).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    # The busy timeout covers a checkpoint or a schema change holding the database for a moment.
    with sqlite3.connect(source, timeout=60) as src, sqlite3.connect(partial) as dst:
        _copy(src, dst, progress)
        dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal beside it
        check = dst.execute("PRAGMA integrity_check").fetchone()[0]
        tables = dst.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    src.close()
    dst.close()
    if check != "ok":
        partial.unlink(missing_ok=True)
        raise CommandError(f"The copy failed its integrity check ({check}); nothing was replaced.")
    partial.replace(destination)
    return {
        "path": destination,
        "bytes": destination.stat().st_size,
        "tables": tables,
        "seconds": time.perf_counter() - started,
    }


def _copy(src: sqlite3.Connection, dst: sqlite3.Connection, progress: Progress | None) -> None:
    total_pages = src.execute("PRAGMA page_count").fetchone()[0]
    if progress is None:
        src.backup(dst)  # all pages in one step: one consistent snapshot
        return
    progress.set_total(total_pages)
    lowest = [total_pages]

    def step(status: int, remaining: int, total: int) -> None:
        if remaining >= lowest[0] and lowest[0] < total_pages:  # no progress since the last step: restarted
            raise _SourceChanged
        lowest[0] = remaining
        progress.set_total(total)
        progress.update(total - remaining)

    try:
        src.backup(dst, pages=max(1, total_pages // STEP_FRACTION), progress=step)
    except _SourceChanged:
        src.backup(dst)  # writers keep changing it: one step, one consistent snapshot
    progress.update(progress.total or total_pages)
    progress.close()


class Command(BaseCommand):
    help = "Write a consistent copy of the SQLite database while the system keeps running."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "path",
            nargs="?",
            help="Where to write the copy (default: AICP_DATA_DIR/backups/aicp-<UTC time>.sqlite3).",
        )
        parser.add_argument("--quiet", action="store_true", help="No progress bar on stderr.")

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "sqlite":
            raise CommandError(
                f"manage.py backup copies a SQLite database; this one is {connection.vendor}. "
                'On PostgreSQL use pg_dump, e.g. pg_dump --format=custom --file=aicp.dump "$DATABASE_URL" '
                "(restore with pg_restore --clean --dbname ...)."
            )
        source = Path(connection.settings_dict["NAME"])
        if not source.exists():
            raise CommandError(f"There is no database file at {source}.")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        destination = Path(options["path"] or Path(settings.DATA_DIR) / "backups" / f"aicp-{stamp}.sqlite3")
        if destination.resolve() == source.resolve():
            raise CommandError("The backup path is the database itself; choose another file.")
        progress = Progress(None, label="backup", unit="pages", stream=self.stderr, quiet=options["quiet"])
        result = backup_sqlite(source, destination, progress)
        self.stdout.write(
            self.style.SUCCESS(
                f"Backed up {source} to {result['path']} ({result['bytes']:,} bytes, "
                f"{result['tables']} tables, integrity ok) in {result['seconds']:.2f} s"
            )
        )
