"""Exports Duke's training samples: OpenAI fine-tuning chat JSONL, or plain `{text, label}` lines.

The label is the buyer's correction when there is one, else the LLM's answer. The chat format uses the
exact messages the LLM agents send, so a model fine-tuned on it is asked the way it was taught.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from agents.llm import request_messages
from core.progress import Progress
from duke.models import TrainingData

FORMATS = ("openai", "jsonl")


def parse_since(value: str) -> datetime:
    """A date (midnight, current time zone) or an ISO datetime (naive: current time zone)."""
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            if day is None:
                raise ValueError
            moment = datetime.combine(day, time.min)
    except ValueError:
        raise CommandError(f"--since {value!r}: expected a date (2025-01-31) or an ISO datetime") from None
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def samples_for_export(
    *, export_format: str, task_type: str | None = None, since: datetime | None = None
) -> QuerySet[TrainingData]:
    samples = TrainingData.objects.order_by("created_at", "pk")
    if export_format == "jsonl":
        samples = samples.filter(labels__isnull=False)  # a free-form answer is not a label
    if task_type is not None:
        samples = samples.filter(task_type=task_type)
    if since is not None:
        samples = samples.filter(created_at__gte=since)
    return samples.defer("embedding")


def sample_line(sample: TrainingData, export_format: str) -> dict[str, Any]:
    if export_format == "jsonl":
        return {"text": sample.input_text, "label": sample.label}
    messages = request_messages(text=sample.input_text, labels=sample.labels or None)
    answer = json.dumps({"label": sample.label}, ensure_ascii=False) if sample.is_labeling else sample.label
    return {"messages": [*messages, {"role": "assistant", "content": answer}]}


def export_lines(samples: QuerySet[TrainingData], export_format: str) -> Iterator[str]:
    for sample in samples.iterator(chunk_size=500):
        yield json.dumps(sample_line(sample, export_format), ensure_ascii=False) + "\n"


class Command(BaseCommand):
    help = "Export Duke's training samples as OpenAI fine-tuning chat JSONL or plain {text, label} JSONL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", required=True, choices=FORMATS, dest="export_format")
        parser.add_argument("--task-type", default=None, help="Only this task type ('' for untyped).")
        parser.add_argument("--since", default=None, help="Only samples recorded from this date/datetime.")
        parser.add_argument("--output", default=None, help="Write to this file (atomically); default stdout.")
        parser.add_argument("--quiet", action="store_true", help="No progress bar on stderr.")

    def handle(self, *args: Any, **options: Any) -> None:
        export_format = options["export_format"]
        since = parse_since(options["since"]) if options["since"] else None
        samples = samples_for_export(export_format=export_format, task_type=options["task_type"], since=since)
        output = options["output"]
        self._progress = Progress(
            samples.count(), label="export", unit="samples", stream=self.stderr, quiet=options["quiet"]
        )
        if output is None:
            count = self._write(lambda line: self.stdout.write(line, ending=""), samples, export_format)
        else:
            count = self._write_file(Path(output), samples, export_format)
        self._progress.close()
        where = output or "stdout"
        sys.stderr.write(f"Exported {count} sample(s) as {export_format} to {where}\n")

    def _write(
        self, write: Callable[[str], object], samples: QuerySet[TrainingData], export_format: str
    ) -> int:
        count = 0
        for line in export_lines(samples, export_format):
            write(line)
            count += 1
            self._progress.update(count)
        return count

    def _write_file(self, path: Path, samples: QuerySet[TrainingData], export_format: str) -> int:
        directory = path.resolve().parent
        if not directory.is_dir():
            raise CommandError(f"--output {path}: directory {directory} does not exist")
        # A half-written file must never look like a finished export: write aside, then rename.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                count = self._write(handle.write, samples, export_format)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return count
