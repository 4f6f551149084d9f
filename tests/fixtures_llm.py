"""Pytest plugin: a local OpenAI-compatible simulator and an endpoint pointing at it.

Enable with ``pytest_plugins = ["tests.fixtures_llm"]`` in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agents.llm import LLMEndpoint
from agents.simulator import LLMSimulator


@pytest.fixture
def make_llm_simulator() -> Iterator[Callable[..., LLMSimulator]]:
    """Start simulators with ``LLMSimulator`` kwargs; all are stopped after the test.

    ``zero_shot`` defaults to False here so tests never load the sentence encoder unless they ask for it.
    """
    started: list[LLMSimulator] = []

    def make(**kwargs: Any) -> LLMSimulator:
        kwargs.setdefault("zero_shot", False)
        simulator = LLMSimulator(**kwargs).start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()


@pytest.fixture
def llm_simulator(make_llm_simulator: Callable[..., LLMSimulator]) -> LLMSimulator:
    return make_llm_simulator()


@pytest.fixture
def llm_endpoint(llm_simulator: LLMSimulator) -> LLMEndpoint:
    return LLMEndpoint(model="gpt-4o-mini", base_url=llm_simulator.base_url, api_key="test-key", timeout_s=5)
