"""``python manage.py llm_simulator``: serve the OpenAI-compatible simulator for demos and benchmarks."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Serve a local OpenAI-compatible LLM simulator (not a real model) until interrupted."

    def add_arguments(self, parser: ArgumentParser) -> None:
        from agents.simulator import add_arguments

        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from agents.simulator import serve_until_interrupted, simulator_from_options

        try:
            simulator = simulator_from_options(options)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        try:
            serve_until_interrupted(simulator, announce=self._announce)
        except OSError as exc:  # e.g. the port is taken
            raise CommandError(f"Could not serve on {options['host']}:{options['port']}: {exc}") from exc

    def _announce(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
