"""What a web process serves: the production version, loaded in the background before a request needs it.

A web worker runs a `Preloader` (started by duke.apps when DUKE_PRELOAD is on, which run_system sets for the
web server only): a daemon thread that reads which version is production every DUKE_PRELOAD_POLL_S (or at
once when routing meets a version it does not have) and, when that changed, loads the artifact and the
sentence encoder (when the head uses embeddings), runs one prediction so that torch's first-call costs are
paid here too, and only then publishes the model. Routing reads only what is published: a request never
loads a model, and while the production version is not loaded yet its tasks go to the LLM. Loading in the
request cost a newcomer's first Duke-served task 16.8 s.

A process without a preloader (the queue, a shell, the test suite) loads on first use, as before.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import close_old_connections, connection

from duke import registry
from duke.encoder import ENCODER_ID
from duke.models import ModelVersion

if TYPE_CHECKING:
    from duke.model import TrainedModel

logger = logging.getLogger("duke")

WARM_UP_TEXT = "warm up"


def needs_embedding(model: TrainedModel) -> bool:
    """A head trained with sentence embeddings is calibrated on them: without one its confidence lies.

    One trained without any (no encoder installed) is calibrated without, and encoding would be wasted.
    """
    return bool(model.metadata.get("with_embedding", 1))


def embeds_like_this_encoder(model: TrainedModel) -> bool:
    """Whether the vectors this process's encoder makes are the ones the model was calibrated on.

    A version trained before artifacts recorded their encoder (no `encoder_id`) is taken as compatible:
    the encoder it knew agrees with today's at cosine >= 0.98 (tests/duke/test_encoder.py).
    """
    trained_with = model.metadata.get("encoder_id")
    return not needs_embedding(model) or trained_with is None or trained_with == ENCODER_ID


def warm_up(model: TrainedModel) -> None:
    """Loads what the model's first prediction would load (the encoder) and makes that prediction."""
    from duke.encoder import EncoderUnavailable, encode_texts
    from duke.model import Input

    embedding = None
    if needs_embedding(model):
        try:
            embedding = encode_texts([WARM_UP_TEXT])[0]
        except EncoderUnavailable:
            # Routing then sends its tasks to the LLM (and says why); the n-gram view still warms up.
            logger.warning("Duke's production version uses sentence embeddings but the encoder is missing")
    labels = tuple(model.label_index)[:2]
    if len(labels) == 2:
        model.predict([Input(WARM_UP_TEXT, labels, "", embedding)])


@dataclass(frozen=True)
class _Published:
    number: int
    sha256: str
    model: TrainedModel


class Preloader:
    """Keeps this process's copy of the production model current, off the request path."""

    def __init__(self, *, poll_s: float, published: _Published | None = None) -> None:
        self.poll_s = poll_s
        self._published = published
        self._broken: tuple[int, str, float] | None = None  # (number, sha256, when it failed to load)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="duke-preload", daemon=True)

    def start(self) -> Preloader:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout_s)

    @property
    def loaded_version(self) -> int | None:
        published = self._published
        return published.number if published else None

    def wake(self) -> None:
        """Look at the production version now rather than at the next poll."""
        self._wake.set()

    def model_for(self, version: ModelVersion) -> TrainedModel | None:
        """The published model when it is this version's artifact; else None, and the loader looks now."""
        published = self._published
        if published is not None and (published.number, published.sha256) == (
            version.number,
            version.artifact_sha256,
        ):
            return published.model
        self.wake()
        return None

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    close_old_connections()
                    self.sync()
                except Exception:  # noqa: BLE001 — the loader must outlive a database hiccup or a bad file
                    logger.exception("Duke's preloader failed; it tries again in %.0f s", self.poll_s)
                self._wake.wait(self.poll_s)
                self._wake.clear()
        finally:
            connection.close()

    def sync(self) -> None:
        """Loads and publishes the production version if it is not the published one."""
        version = (
            ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION)
            .only("number", "artifact_path", "artifact_sha256")
            .first()
        )
        if version is None:
            self._published = None  # rolled back to no version: nothing to serve, nothing to keep in memory
            return
        published = self._published
        if published is not None and (published.number, published.sha256) == (
            version.number,
            version.artifact_sha256,
        ):
            return
        broken = self._broken
        if broken is not None and broken[:2] == (version.number, version.artifact_sha256):
            if time.monotonic() - broken[2] < registry.RETRY_BROKEN_S:
                return
        started = time.perf_counter()
        try:
            model = registry.model_load(version)
            warm_up(model)
        except Exception as exc:  # noqa: BLE001 — an artifact that does not load or predict is never served
            logger.error("Duke v%d is production but cannot be served: %s", version.number, exc)
            self._broken = (version.number, version.artifact_sha256, time.monotonic())
            return
        self._published = _Published(version.number, version.artifact_sha256, model)
        self._broken = None
        logger.info(
            "Duke v%d loaded for serving in the background (%.0f ms)",
            version.number,
            (time.perf_counter() - started) * 1000,
        )


_preloader: Preloader | None = None
_preloader_lock = threading.Lock()
_fork_hook_registered = False


def preloading_start(*, poll_s: float) -> Preloader:
    """Starts this process's preloader (once); from then on routing serves only what it has loaded."""
    global _preloader, _fork_hook_registered
    with _preloader_lock:
        if _preloader is None:
            _preloader = Preloader(poll_s=poll_s).start()
        if not _fork_hook_registered:
            os.register_at_fork(after_in_child=_restart_after_fork)
            _fork_hook_registered = True
        return _preloader


def preloading_stop() -> None:
    """Stops the preloader; routing goes back to loading on first use."""
    global _preloader
    with _preloader_lock:
        preloader, _preloader = _preloader, None
    if preloader is not None:
        preloader.stop()


def _restart_after_fork() -> None:
    # A server that imports the application before forking its workers (gunicorn --preload) forks without
    # the thread: each worker starts its own, keeping the model the parent had already loaded.
    global _preloader
    parent = _preloader
    if parent is not None:
        _preloader = Preloader(poll_s=parent.poll_s, published=parent._published).start()


def production_model() -> tuple[ModelVersion, TrainedModel] | None:
    """The production version (a fresh row: thresholds change) and its model, if this process can serve it."""
    preloader = _preloader
    if preloader is None:
        return registry.load_production_model()
    version = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
    if version is None:
        return None
    model = preloader.model_for(version)
    return (version, model) if model is not None else None
