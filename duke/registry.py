"""Duke's artifacts on disk: written atomically, named by version and checksum, verified on every load.

A version row stores the artifact's file name (relative to DUKE_MODEL_DIR, so the data folder can move)
and its sha256. Reading checks the checksum before torch ever sees the bytes; a missing, truncated or
swapped file raises `ArtifactError` and is never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from duke.models import ModelVersion

if TYPE_CHECKING:
    # duke.model maps torch; it is imported when an artifact is first loaded, so that processes which
    # import the registry (through duke.services) but never serve or train Duke don't carry it.
    from duke.model import TrainedModel

logger = logging.getLogger("duke")

# After a production artifact failed to load, how long every process waits before reading it again
# (so a broken file costs one log line per interval, not one disk read per routed task).
RETRY_BROKEN_S = 30.0


class ArtifactError(RuntimeError):
    """A version's artifact is missing, corrupt or unreadable."""


def model_dir() -> Path:
    return Path(settings.DUKE_MODEL_DIR)


def artifact_name(*, number: int, sha256: str) -> str:
    return f"v{number}-{sha256[:12]}.pt"


def _resolve(stored: str) -> Path:
    base = model_dir().resolve()
    path = (base / stored).resolve()
    # The path comes from the database; it must never make us read outside the model folder.
    if base not in path.parents:
        raise ArtifactError(f"artifact path {stored!r} is outside DUKE_MODEL_DIR")
    return path


def artifact_write(*, number: int, data: bytes) -> tuple[str, str]:
    """Writes the artifact atomically (temp file, fsync, rename); returns (file name, sha256)."""
    sha = hashlib.sha256(data).hexdigest()
    directory = model_dir()
    directory.mkdir(parents=True, exist_ok=True)
    name = artifact_name(number=number, sha256=sha)
    fd, tmp = tempfile.mkstemp(prefix=f".v{number}-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the directory entry is on disk too.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return name, sha


def artifact_delete(*, name: str) -> None:
    if not name:
        return
    with contextlib.suppress(FileNotFoundError, ArtifactError):
        _resolve(name).unlink()


def artifact_read(version: ModelVersion) -> bytes:
    """The artifact's bytes, only if they match the checksum stored on the version."""
    if not version.artifact_path or not version.artifact_sha256:
        raise ArtifactError(f"Duke v{version.number} has no artifact")
    try:
        path = _resolve(version.artifact_path)
    except ArtifactError as exc:
        raise ArtifactError(f"Duke v{version.number}: {exc}") from exc
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"Duke v{version.number}: cannot read artifact {path}: {exc.strerror}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != version.artifact_sha256:
        raise ArtifactError(
            f"Duke v{version.number}: artifact {path.name} is corrupt "
            f"(sha256 {actual[:12]}…, expected {version.artifact_sha256[:12]}…)"
        )
    return data


def model_load(version: ModelVersion) -> TrainedModel:
    """Verifies and deserialises a version's model; any problem is an `ArtifactError`."""
    from duke.model import TrainedModel

    data = artifact_read(version)
    try:
        return TrainedModel.from_bytes(data)
    except Exception as exc:  # noqa: BLE001 — whatever torch says about bad bytes, the caller needs one error
        raise ArtifactError(f"Duke v{version.number}: artifact does not load: {exc}") from exc


# --- the production model, cached per process ----------------------------------------------------------


@dataclass
class _Cached:
    number: int
    sha256: str
    model: TrainedModel | None  # None: this artifact failed to load at `failed_at`
    failed_at: float = 0.0


_cache: _Cached | None = None
_cache_lock = threading.Lock()


def load_production_model() -> tuple[ModelVersion, TrainedModel] | None:
    """The production version (fresh row: thresholds may change) and its model, loaded once per artifact.

    For processes without a preloader (duke.serving): the first call after a promotion loads the model.

    Costs one indexed query while production is unchanged. None when there is no production version or
    its artifact is broken (logged; a broken artifact is never served, and re-read every 30 s at most).
    """
    global _cache
    version = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
    if version is None:
        return None
    cached = _cache
    if cached is not None and cached.number == version.number and cached.sha256 == version.artifact_sha256:
        if cached.model is not None:
            return version, cached.model
        if time.monotonic() - cached.failed_at < RETRY_BROKEN_S:
            return None
    with _cache_lock:
        cached = _cache
        if (
            cached is not None
            and cached.number == version.number
            and cached.sha256 == version.artifact_sha256
            and cached.model is not None
        ):
            return version, cached.model
        try:
            model = model_load(version)
        except ArtifactError as exc:
            logger.error("Duke v%d is production but cannot be served: %s", version.number, exc)
            _cache = _Cached(version.number, version.artifact_sha256, None, time.monotonic())
            return None
        _cache = _Cached(version.number, version.artifact_sha256, model)
        logger.info("Duke v%d loaded for serving", version.number)
        return version, model


def clear_cache() -> None:
    global _cache
    with _cache_lock:
        _cache = None
