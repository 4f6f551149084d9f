"""core.progress: the bar long commands draw (export, backup, demo), with rate and time left."""

from __future__ import annotations

import io
import json
import sqlite3
from io import StringIO

import pytest
from django.core.management import call_command

from core.progress import Progress, bar, format_duration, format_rate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_it_formats_durations_rates_and_bars_for_people() -> None:
    assert format_duration(42.4) == "42 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(3720) == "1 h 02 min"
    assert format_duration(None) == "?"
    assert format_rate(12.345, "samples") == "12.3 samples/s"
    assert format_rate(4321.0) == "4,321/s"
    assert bar(5, 10, 10) == "[#####.....]"
    assert bar(0, None, 4) == "[....]"


def test_it_shows_rate_and_time_left_in_a_log_every_few_seconds_and_at_the_end() -> None:
    clock, out = Clock(), StringIO()
    progress = Progress(100, label="export", unit="rows", stream=out, clock=clock, log_interval=5.0)
    clock.now += 2.0
    progress.update(10)  # first line: drawn
    clock.now += 1.0
    progress.update(20)  # 1 s later: too soon for a log line
    clock.now += 5.0
    progress.update(40)
    clock.now += 2.0
    progress.update(100)  # the end is always written
    progress.close()  # and not twice
    lines = out.getvalue().splitlines()
    assert lines == [
        "export [###...........................] 10/100 · 5.0 rows/s · 18 s left",
        "export [############..................] 40/100 · 5.0 rows/s · 12 s left",
        "export [##############################] 100/100 · 10.0 rows/s · 10 s elapsed",
    ]


def test_it_redraws_one_line_on_a_terminal_and_ends_it() -> None:
    clock, out = Clock(), Tty()
    progress = Progress(4, stream=out, clock=clock, min_interval=0.0)
    for _ in range(4):
        clock.now += 1.0
        progress.advance()
    progress.close()
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 4 and text.endswith("4/4 · 1.0/s · 4 s elapsed\n")
    assert text.count("\n") == 1


def test_it_is_silent_when_quiet() -> None:
    out = Tty()
    with Progress(3, stream=out, quiet=True) as progress:
        progress.update(3)
    assert out.getvalue() == ""


def test_it_counts_without_a_total() -> None:
    clock, out = Clock(), StringIO()
    progress = Progress(None, stream=out, clock=clock)
    clock.now += 2.0
    progress.update(7)
    assert out.getvalue() == "7 · 3.5/s\n"


@pytest.mark.django_db
def test_it_shows_the_export_progress_on_stderr_and_keeps_stdout_clean() -> None:
    import uuid

    from duke.models import TrainingData

    for i in range(3):
        TrainingData.objects.create(
            task_id=uuid.uuid4(), input_text=f"text {i}", labels=["a", "b"], output="a", split="train"
        )
    out, err = StringIO(), StringIO()
    call_command("export_training_data", "--format", "jsonl", stdout=out, stderr=err)
    assert [json.loads(line)["text"] for line in out.getvalue().splitlines()] == [
        f"text {i}" for i in range(3)
    ]
    assert "export [##############################] 3/3" in err.getvalue()
    assert "samples/s" in err.getvalue()
    quiet = StringIO()
    call_command("export_training_data", "--format", "jsonl", "--quiet", stdout=StringIO(), stderr=quiet)
    assert quiet.getvalue() == ""


def test_it_shows_the_backup_progress_in_pages(tmp_path) -> None:
    from aicp.management.commands.backup import backup_sqlite

    source = tmp_path / "source.sqlite3"
    with sqlite3.connect(source) as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,) for _ in range(2000)])
    db.close()
    err = StringIO()
    progress = Progress(None, label="backup", unit="pages", stream=err, log_interval=0.0)
    result = backup_sqlite(source, tmp_path / "copy.sqlite3", progress)
    lines = err.getvalue().splitlines()
    assert len(lines) > 10  # it moved in steps
    assert lines[-1].startswith("backup [##############################]") and "elapsed" in lines[-1]
    assert result["tables"] == 1
    with sqlite3.connect(tmp_path / "copy.sqlite3") as copy:
        assert copy.execute("SELECT count(*) FROM t").fetchone()[0] == 2000
    copy.close()


def test_it_takes_the_backup_in_one_step_when_a_writer_restarts_the_stepped_copy(
    tmp_path, monkeypatch
) -> None:
    from aicp.management.commands import backup
    from aicp.management.commands.backup import backup_sqlite

    restarts: list[int] = []

    class Restarted(backup._SourceChanged):
        def __init__(self) -> None:
            restarts.append(1)
            super().__init__()

    monkeypatch.setattr(backup, "_SourceChanged", Restarted)

    source = tmp_path / "source.sqlite3"
    with sqlite3.connect(source) as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,) for _ in range(2000)])
    db.close()

    class WritesOnce(Progress):
        wrote = False

        def update(self, done: int, **kwargs: object) -> None:
            super().update(done)
            if not self.wrote and 0 < done < (self.total or 0):
                self.wrote = True
                with sqlite3.connect(source) as writer:  # another connection: SQLite restarts the copy
                    writer.execute("INSERT INTO t VALUES ('late')")
                writer.close()

    progress = WritesOnce(None, stream=StringIO())
    backup_sqlite(source, tmp_path / "copy.sqlite3", progress)

    assert progress.wrote and restarts == [1]  # seen, and the copy was finished in one step
    with sqlite3.connect(tmp_path / "copy.sqlite3") as copy:
        assert copy.execute("SELECT count(*) FROM t").fetchone()[0] == 2001  # the snapshot after the write
    copy.close()
