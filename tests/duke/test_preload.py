"""A web worker's preloader loads the production version (and the encoder) off the request path.

Through the API: once the background thread has loaded production, a POST /tasks Duke covers is served
without any model being loaded in the request; right after a promotion, the next task goes to the LLM
(nothing is loaded in the request) and the preloader, woken by it, loads the new version for the ones after.
Transactional, because the preloader reads the database from its own thread.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from duke import encoder, registry, serving
from duke.model import Sample
from duke.models import ServedTask
from duke.training import TrainConfig, train
from tests.duke.routing_helpers import LABELS, TASK_TYPE, install_production, topic_text

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SPORTS = "striker goal match league coach stadium referee season"
LOADER_THREAD = "duke-preload"


def _wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _post(client, description: str = SPORTS):
    body = {"description": description, "complexity": 2, "labels": list(LABELS), "task_type": TASK_TYPE}
    response = client.post("/tasks", {**body, "agent": "auto"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def model_loads(monkeypatch) -> list[str]:
    """The name of the thread of every model load in this process."""
    loads: list[str] = []
    real_load = registry.model_load

    def counting_load(version):
        loads.append(threading.current_thread().name)
        return real_load(version)

    monkeypatch.setattr(registry, "model_load", counting_load)
    return loads


@pytest.fixture
def preloader(settings):
    settings.DUKE_AUDIT_RATE = 0.0
    registry.clear_cache()
    # A poll far longer than the test: the preloader loads when it starts and when routing wakes it.
    yield serving.preloading_start(poll_s=3600)
    serving.preloading_stop()
    registry.clear_cache()


def test_it_serves_from_the_preloaded_model_without_loading_one_in_the_request(
    buyer_client, llm_settings, model_loads, preloader
):
    version = install_production()
    preloader.wake()  # as on a poll, without waiting for one
    _wait_until(lambda: preloader.loaded_version == version.number)
    loads_before = len(model_loads)

    task = _post(buyer_client)

    assert task["executed_by"] == "duke" and task["result"] == "sports"
    assert len(model_loads) == loads_before  # nothing loaded in the request
    assert set(model_loads) == {LOADER_THREAD}


def test_it_sends_tasks_to_the_llm_until_a_promoted_version_is_loaded_then_serves_it(
    buyer_client, llm_settings, model_loads, preloader
):
    first = install_production()
    preloader.wake()
    _wait_until(lambda: preloader.loaded_version == first.number)
    assert _post(buyer_client)["executed_by"] == "duke"

    second = install_production()  # promoted: the preloader has not seen it yet (its poll is an hour)
    while_loading = _post(buyer_client)

    assert while_loading["executed_by"] != "duke"  # to the LLM, not a load in the request
    _wait_until(lambda: preloader.loaded_version == second.number)  # woken by that request
    served = _post(buyer_client)
    assert served["executed_by"] == "duke"
    assert ServedTask.objects.get(task_id=served["id"]).model_version == second.number != first.number
    assert model_loads == [LOADER_THREAD, LOADER_THREAD]


def test_it_drops_the_model_when_no_version_is_production_any_more(buyer_client, llm_settings, preloader):
    version = install_production()
    preloader.wake()
    _wait_until(lambda: preloader.loaded_version == version.number)
    version.status = version.Status.RETIRED
    version.save(update_fields=["status"])

    preloader.wake()

    _wait_until(lambda: preloader.loaded_version is None)
    assert _post(buyer_client)["executed_by"] != "duke"


def _model_with_embeddings() -> bytes:
    rng = random.Random(0)
    vectors = np.random.default_rng(0)
    samples = []
    for _ in range(40):
        for label in LABELS:
            embedding = vectors.normal(size=encoder.EMBEDDING_DIM).astype(np.float32)
            samples.append(Sample(topic_text(label, rng), label, LABELS, TASK_TYPE, embedding))
    return train(
        samples, seed=0, config=TrainConfig(n_buckets=1 << 12, max_epochs=5, min_steps=20)
    ).to_bytes()


@pytest.mark.skipif(not encoder.encoder_available(), reason="the sentence encoder package is not installed")
def test_it_loads_the_encoder_before_publishing_a_model_that_uses_embeddings(
    buyer_client, llm_settings, monkeypatch, preloader
):
    encoder_loads: list[str] = []
    real_load = encoder._production_encoder

    def counting_load():
        if encoder._encoder is None:
            encoder_loads.append(threading.current_thread().name)
        return real_load()

    monkeypatch.setattr(encoder, "_encoder", None)  # as in a fresh web worker
    monkeypatch.setattr(encoder, "_production_encoder", counting_load)
    install_production(data=_model_with_embeddings(), thresholds={TASK_TYPE: {"threshold": 0.0}})

    preloader.wake()
    _wait_until(lambda: preloader.loaded_version is not None)

    assert encoder_loads == [LOADER_THREAD]
    loads_before = len(encoder_loads)
    task = _post(buyer_client)
    assert task["executed_by"] == "duke"
    assert len(encoder_loads) == loads_before


def test_it_never_publishes_a_corrupt_artifact_and_routes_to_the_llm(
    buyer_client, caplog, llm_settings, model_loads, preloader
):
    version = install_production()
    (registry.model_dir() / version.artifact_path).write_bytes(b"not a model")
    caplog.set_level("ERROR", logger="duke")

    preloader.wake()
    _wait_until(lambda: any("cannot be served" in r.getMessage() for r in caplog.records))
    preloader.wake()  # a second look within the retry interval does not read the file again
    task = _post(buyer_client)

    assert preloader.loaded_version is None
    assert task["executed_by"] != "duke"
    _wait_until(lambda: len(model_loads) >= 1)
    assert model_loads == [LOADER_THREAD]
