"""The command line shared by ``python -m agents.simulator`` and ``manage.py llm_simulator``."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from agents.simulator.server import LLMSimulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``python -m agents.simulator`` and ``manage.py llm_simulator``."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument(
        "--dataset", default=None, help="JSONL file of {text, label} rows (a perfect teacher)"
    )
    parser.add_argument("--latency-ms", type=int, default=0, help="delay before each answer")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="fraction of requests failing 429/500/503"
    )
    parser.add_argument("--noise", type=float, default=0.0, help="fraction of dataset labels flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-zero-shot",
        dest="zero_shot",
        action="store_false",
        help="label unknown texts by hash instead of the sentence encoder",
    )


def simulator_from_options(options: dict[str, Any]) -> LLMSimulator:
    return LLMSimulator(
        dataset=options["dataset"],
        latency_ms=options["latency_ms"],
        fault_rate=options["fault_rate"],
        noise=options["noise"],
        zero_shot=options["zero_shot"],
        seed=options["seed"],
        host=options["host"],
        port=options["port"],
    )


def serve_until_interrupted(simulator: LLMSimulator, announce: Callable[[str], None] = print) -> None:
    simulator.start()
    # Serve right away; the encoder loads meanwhile so the first unknown text doesn't wait seconds.
    threading.Thread(target=simulator.warm_up, name="llm-simulator-warm-up", daemon=True).start()
    announce(f"AICP LLM simulator (not a real model) serving at {simulator.base_url} — Ctrl-C to stop")
    try:
        while simulator._thread is not None and simulator._thread.is_alive():
            simulator._thread.join(timeout=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    # --help describes the simulator in the first line of the package's docstring, its one description.
    description = sys.modules[__package__].__doc__.splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m agents.simulator", description=description)
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        simulator = simulator_from_options(options)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    serve_until_interrupted(simulator, announce=lambda line: print(line, flush=True))
