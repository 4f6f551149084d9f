"""Artifacts on disk: atomic writes, checksums verified on every load, the per-process production cache."""

from __future__ import annotations

import hashlib
import logging

import pytest

from duke import registry
from duke.model import Input, TrainedModel
from duke.models import ModelVersion
from duke.services import model_promote
from tests.duke.learning_helpers import LABELS, TASK_TYPE, install_version, trained_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    registry.clear_cache()
    yield
    registry.clear_cache()


def _version(name: str, sha: str, number: int = 3) -> ModelVersion:
    return ModelVersion(number=number, artifact_path=name, artifact_sha256=sha)


def test_it_writes_an_artifact_under_its_version_and_checksum_with_no_temp_file_left(settings):
    name, sha = registry.artifact_write(number=3, data=b"weights")
    assert sha == hashlib.sha256(b"weights").hexdigest()
    assert name == f"v3-{sha[:12]}.pt"
    assert [p.name for p in settings.DUKE_MODEL_DIR.iterdir()] == [name]
    assert registry.artifact_read(_version(name, sha)) == b"weights"


def test_it_leaves_nothing_behind_when_a_write_fails(settings, monkeypatch):
    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("duke.registry.os.fsync", disk_full)
    with pytest.raises(OSError):
        registry.artifact_write(number=1, data=b"weights")
    assert list(settings.DUKE_MODEL_DIR.iterdir()) == []


def test_it_refuses_corrupt_missing_foreign_and_absent_artifacts(settings):
    name, sha = registry.artifact_write(number=3, data=b"weights")
    cases = {
        "corrupt": _version(name, hashlib.sha256(b"other weights").hexdigest()),
        "cannot read": _version("v3-000000000000.pt", sha),
        "outside DUKE_MODEL_DIR": _version("../../etc/passwd", sha),
        "has no artifact": _version("", ""),
    }
    for message, version in cases.items():
        with pytest.raises(registry.ArtifactError) as refused:
            registry.model_load(version)
        assert message in str(refused.value) and "v3" in str(refused.value)


def test_it_refuses_bytes_that_match_their_checksum_but_are_not_a_model():
    name, sha = registry.artifact_write(number=2, data=b"not a torch file")
    with pytest.raises(registry.ArtifactError, match="does not load"):
        registry.model_load(_version(name, sha, number=2))


def test_it_loads_a_model_that_predicts_exactly_like_the_one_saved():
    version = install_version(number=1, status=ModelVersion.Status.CANDIDATE)
    loaded = registry.model_load(version)
    original = TrainedModel.from_bytes(trained_bytes())
    inputs = [Input("the striker scored in the final match", LABELS, TASK_TYPE)]
    assert loaded.predict(inputs) == original.predict(inputs)
    assert loaded.predict(inputs)[0].label == "sports"


def test_it_caches_the_production_model_until_production_changes(django_assert_num_queries, monkeypatch):
    install_version(number=1, status=ModelVersion.Status.PRODUCTION)
    install_version(number=2, status=ModelVersion.Status.CANDIDATE, swapped=True)
    loads: list[int] = []
    real_load = registry.model_load

    def counting_load(version: ModelVersion) -> TrainedModel:
        loads.append(version.number)
        return real_load(version)

    monkeypatch.setattr("duke.registry.model_load", counting_load)
    first_version, first_model = registry.load_production_model()
    with django_assert_num_queries(1):
        again_version, again_model = registry.load_production_model()
    assert first_version.number == again_version.number == 1 and again_model is first_model
    assert loads == [1]

    model_promote(number=2)
    loads.clear()
    version, model = registry.load_production_model()
    assert version.number == 2 and model is not first_model and loads == [2]


def test_it_never_serves_a_production_artifact_that_fails_its_checksum(settings, caplog, monkeypatch):
    version = install_version(number=1, status=ModelVersion.Status.PRODUCTION)
    path = settings.DUKE_MODEL_DIR / version.artifact_path
    path.write_bytes(path.read_bytes()[:-10])
    reads: list[int] = []
    real_read = registry.artifact_read
    monkeypatch.setattr("duke.registry.artifact_read", lambda v: reads.append(v.number) or real_read(v))

    with caplog.at_level(logging.ERROR, logger="duke"):
        assert registry.load_production_model() is None
        assert registry.load_production_model() is None
    assert reads == [1]  # a broken artifact is not re-read on every routed task
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "cannot be served" in errors[0] and "corrupt" in errors[0]


def test_it_serves_nothing_without_a_production_version():
    install_version(number=1, status=ModelVersion.Status.CANDIDATE)
    assert registry.load_production_model() is None
