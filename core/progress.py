"""A progress bar for long commands: done/total, rate and time left, on stderr by default.

On a terminal the bar redraws one line in place (at most every `min_interval` seconds); into a pipe or a
log it writes a plain line now and then (every `log_interval` seconds and at the end), so logs stay
readable; `quiet=True` writes nothing. The clock is injectable so tests need no sleeps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 30


def format_duration(seconds: float | None) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`; `?` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_rate(per_second: float, unit: str = "") -> str:
    suffix = f" {unit}/s" if unit else "/s"
    if per_second >= 100:
        return f"{per_second:,.0f}{suffix}"
    return f"{per_second:.1f}{suffix}"


def bar(done: int, total: int | None, width: int = BAR_WIDTH) -> str:
    if not total:
        return "[" + "." * width + "]"
    filled = min(width, int(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class Progress:
    """`with Progress(total, label="export") as p: p.advance()`; `p.update(done)` sets the count."""

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "",
        unit: str = "",
        stream: TextIO | None = None,
        quiet: bool = False,
        min_interval: float = 0.1,
        log_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        # Django's OutputWrapper adds a newline to every write (and colours stderr): write under it.
        stream = stream if stream is not None else sys.stderr
        self.stream: TextIO = getattr(stream, "_out", stream)
        self.quiet = quiet
        self.min_interval = min_interval
        self.log_interval = log_interval
        self.clock = clock
        self.done = 0
        self.started = clock()
        self._last_draw = float("-inf")
        self._drawn_done: int | None = None
        self._open_line = False
        self._closed = False
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())

    # --- figures ----------------------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return max(self.clock() - self.started, 0.0)

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def remaining_seconds(self) -> float | None:
        if not self.total or self.done <= 0:
            return None
        rate = self.rate
        return max(self.total - self.done, 0) / rate if rate > 0 else None

    def line(self, extra: str = "") -> str:
        parts = [self.label] if self.label else []
        count = f"{self.done:,}/{self.total:,}" if self.total else f"{self.done:,}"
        parts.append(f"{bar(self.done, self.total)} {count}" if self.total else count)
        text = " ".join(parts)
        text += f" · {format_rate(self.rate, self.unit)}"
        if self.total and self.done >= self.total:
            text += f" · {format_duration(self.elapsed)} elapsed"
        elif self.total:
            text += f" · {format_duration(self.remaining_seconds)} left"
        if extra:
            text += f" · {extra}"
        return text

    # --- drawing ----------------------------------------------------------------------------------------

    def update(self, done: int, *, extra: str = "", force: bool = False) -> None:
        self.done = done
        self._draw(extra, force=force)

    def advance(self, step: int = 1, *, extra: str = "") -> None:
        self.update(self.done + step, extra=extra)

    def set_total(self, total: int | None) -> None:
        self.total = total

    def _draw(self, extra: str, *, force: bool) -> None:
        if self.quiet or self._closed:
            return
        now = self.clock()
        finished = bool(self.total) and self.done >= (self.total or 0)
        interval = self.min_interval if self.tty else self.log_interval
        if not (force or finished or now - self._last_draw >= interval):
            return
        self._last_draw = now
        self._drawn_done = self.done
        text = self.line(extra)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._open_line = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self, extra: str = "") -> None:
        """Draws the final state once (unless it was just drawn) and ends the line."""
        if self._closed:
            return
        if self._drawn_done != self.done:
            self._draw(extra, force=True)
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False
        self._closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
