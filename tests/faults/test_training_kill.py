"""A Duke training SIGKILLed mid-way: production keeps serving the same verified model, the killed
version never becomes anything but `failed`, and training can run again."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from duke import registry
from duke.models import ModelVersion
from duke.services import model_promote, model_train, sample_record
from tests.faults.harness import REPO, cluster_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

WORDS = {
    "sports": "match goal striker season league coach referee",
    "science": "atom molecule telescope physics experiment theory",
    "politics": "election senate vote minister parliament policy",
}
_TRAIN = "from duke.services import model_train; model_train(reason='manual')"


def _record_samples(count: int) -> None:
    labels = sorted(WORDS)
    for i in range(count):
        label = labels[i % len(labels)]
        words = WORDS[label].split()
        text = " ".join(words[(i + k) % len(words)] for k in range(5)) + f" item {i}"
        sample_record(
            task_id=uuid.uuid4(), text=text, task_type="topic", complexity=1, labels=labels, output=label
        )


def _snapshot(version: ModelVersion) -> dict:
    version.refresh_from_db()
    data = registry.artifact_read(version)  # verifies the checksum
    return {
        "status": version.status,
        "artifact_path": version.artifact_path,
        "artifact_sha256": version.artifact_sha256,
        "bytes_sha256": hashlib.sha256(data).hexdigest(),
        "accuracy": version.accuracy,
    }


def test_it_keeps_production_and_can_retrain_after_a_training_is_killed(settings, tmp_path):
    settings.DUKE_ENCODE_ON_RECORD = False
    settings.DUKE_TRAIN_EVERY = 10_000  # no automatic training: this test starts them
    settings.DUKE_MAX_EPOCHS = 3  # in this process; the training to be killed gets its full budget
    _record_samples(150)
    first = model_train(reason="manual")
    assert first is not None and first.status != ModelVersion.Status.FAILED, first and first.error
    production = model_promote(number=first.number)
    before = _snapshot(production)

    env = cluster_env(
        "http://127.0.0.1:9/v1", DUKE_MODEL_DIR=str(settings.DUKE_MODEL_DIR), DUKE_MAX_EPOCHS="0"
    )
    trainer = subprocess.Popen(
        [sys.executable, "-c", f"import django; django.setup(); {_TRAIN}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        killed = wait_for(
            lambda: ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).first(),
            120,
            "the training to start",
            lambda: (
                trainer.stderr.read().decode(errors="replace")[-3000:] if trainer.poll() is not None else ""
            ),
        )
        trainer.send_signal(signal.SIGKILL)
    finally:
        trainer.wait(timeout=30)
    assert trainer.returncode == -signal.SIGKILL

    # Production is what it was, and still loads.
    assert _snapshot(production) == before
    assert registry.load_production_model()[0].number == production.number
    killed.refresh_from_db()
    assert killed.status == ModelVersion.Status.TRAINING and not killed.artifact_path
    # While the dead training could still be alive, nothing else starts (one training at a time) …
    assert model_train(reason="manual") is None
    # … and once it is past any job's time limit, the next training marks it failed and runs.
    limit_s = int(settings.Q_CLUSTER["timeout"]) + 60
    ModelVersion.objects.filter(pk=killed.pk).update(
        created_at=timezone.now() - timedelta(seconds=limit_s + 1)
    )
    retrained = model_train(reason="manual")

    killed.refresh_from_db()
    assert killed.status == ModelVersion.Status.FAILED
    assert "abandoned" in killed.error
    assert retrained is not None and retrained.number > killed.number
    assert retrained.status in (ModelVersion.Status.CANDIDATE, ModelVersion.Status.PRODUCTION)
    assert not ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).exists()
    if retrained.status == ModelVersion.Status.CANDIDATE:
        assert _snapshot(production) == before
