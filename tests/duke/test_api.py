"""/model/status for everyone signed in; training and the registry for operators only."""

from __future__ import annotations

import pytest

from duke import registry
from duke.models import ModelVersion
from tests.duke.learning_helpers import LABELS, install_version, record_samples, use_fast_training

pytestmark = pytest.mark.django_db

OPERATOR_ONLY = [
    ("post", "/model/train"),
    ("get", "/model/versions"),
    ("post", "/model/versions/1/promote"),
]
VERSION_FIELDS = {
    "version",
    "status",
    "validation_accuracy",
    "macro_f1",
    "train_samples",
    "validation_samples",
    "created_at",
}


@pytest.fixture(autouse=True)
def _fast_training(settings, monkeypatch):
    use_fast_training(settings)
    settings.DUKE_TRAIN_EVERY = 100
    monkeypatch.setattr("duke.services.samples.encoder_available", lambda: False)
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.mark.parametrize("method, path", [("get", "/model/status"), *OPERATOR_ONLY])
def test_it_requires_authentication(api_client, method, path):
    response = getattr(api_client, method)(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("method, path", OPERATOR_ONLY)
def test_it_keeps_training_and_the_registry_to_operators(buyer_client, method, path):
    install_version(number=1, status=ModelVersion.Status.CANDIDATE)
    response = getattr(buyer_client, method)(path)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not ModelVersion.objects.exclude(number=1).exists()
    assert ModelVersion.objects.get(number=1).status == ModelVersion.Status.CANDIDATE


def test_it_shows_an_empty_status_before_any_training(buyer_client):
    response = buyer_client.get("/model/status")
    assert response.status_code == 200
    body = response.json()
    assert body["production_version"] is None
    assert body["production_accuracy"] is None and body["production_macro_f1"] is None
    assert body["training_samples"] == 0 and body["samples_until_next_training"] == 100
    assert body["training_in_progress"] is None and body["versions"] == []
    assert body["routing"]["production_version"] is None


def test_it_shows_production_samples_progress_and_versions_to_any_user(buyer_client):
    install_version(number=1, status=ModelVersion.Status.RETIRED, accuracy=0.8)
    install_version(number=2, status=ModelVersion.Status.PRODUCTION, accuracy=0.93)
    ModelVersion.objects.create(number=3, status=ModelVersion.Status.TRAINING, epoch=4, epochs=12)
    record_samples(7)

    body = buyer_client.get("/model/status/").json()
    assert body["production_version"] == 2
    assert body["production_accuracy"] == 0.93 and body["production_macro_f1"] == 0.93
    assert body["training_samples"] == 7 and body["samples_until_next_training"] == 93
    assert body["training_in_progress"] == {"version": 3, "epoch": 4, "epochs": 12}
    assert [v["version"] for v in body["versions"]] == [3, 2, 1]
    assert all(set(v) == VERSION_FIELDS for v in body["versions"])
    assert body["versions"][1]["validation_accuracy"] == 0.93
    assert body["versions"][1]["train_samples"] == 90 and body["versions"][1]["validation_samples"] == 30
    assert body["routing"]["production_version"] == 2


def test_it_queues_a_training_for_an_operator_and_runs_it_through_the_queue(
    operator_client, django_capture_on_commit_callbacks
):
    record_samples(60)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post("/model/train/")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["reason"] == "operator"
    assert (body["train_samples"], body["validation_samples"]) == (60, 0)  # all train, all calibrate
    version = ModelVersion.objects.get()
    assert version.status in {ModelVersion.Status.PRODUCTION, ModelVersion.Status.CANDIDATE}
    assert version.promotion["trigger"] == "operator" and version.artifact_sha256


def test_it_refuses_a_training_request_without_samples_or_while_one_runs(operator_client):
    response = operator_client.post("/model/train")
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_training_data"
    record_samples(10)
    ModelVersion.objects.create(number=1, status=ModelVersion.Status.TRAINING, epoch=2, epochs=9)
    response = operator_client.post("/model/train")
    assert response.status_code == 409
    error = response.json()["error"]
    assert (
        error["code"] == "training_in_progress"
        and "v1 is already training (epoch 2 of 9)" in error["message"]
    )


def test_it_refuses_to_train_below_the_minimums_and_says_what_is_missing(operator_client, settings):
    settings.DUKE_MIN_SAMPLES = 50
    record_samples(10)
    response = operator_client.post("/model/train")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "not_enough_samples"
    assert "at least 50 labeling samples" in error["message"] and "it has 10 of 10" in error["message"]
    assert not ModelVersion.objects.exists()


def test_it_refuses_to_train_a_version_that_would_know_a_single_label(operator_client, settings):
    settings.DUKE_MIN_SAMPLES = 50
    record_samples(60, label_map=dict.fromkeys(LABELS, "sports"))  # the teacher says one label only
    response = operator_client.post("/model/train")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "not_enough_samples"
    assert "at least 2 labels with 2 samples each" in error["message"] and "'sports': 60" in error["message"]


def test_it_lists_every_version_in_full_for_operators(operator_client):
    install_version(number=1, status=ModelVersion.Status.PRODUCTION)
    ModelVersion.objects.create(number=2, status=ModelVersion.Status.FAILED, error="RuntimeError: boom")

    for path in ("/model/versions", "/model/versions/"):
        body = operator_client.get(path).json()
        assert body["count"] == 2
        failed, production = body["results"]
        assert failed["version"] == 2 and failed["error"] == "RuntimeError: boom"
        assert production["version"] == 1 and len(production["artifact_sha256"]) == 64
        for field in (
            "per_task_type",
            "thresholds",
            "promotion",
            "training_seconds",
            "epochs",
            "artifact_path",
        ):
            assert field in production


def test_it_promotes_and_rolls_back_through_the_api(operator_client):
    install_version(number=1, status=ModelVersion.Status.PRODUCTION)
    install_version(number=2, status=ModelVersion.Status.CANDIDATE, swapped=True)

    response = operator_client.post("/model/versions/2/promote")
    assert response.status_code == 200
    assert (
        response.json()["status"] == "production"
        and response.json()["promotion"]["manual"]["by"] == "operator"
    )
    assert ModelVersion.objects.get(number=1).status == ModelVersion.Status.RETIRED

    response = operator_client.post("/model/versions/1/promote/")
    assert response.status_code == 200 and response.json()["version"] == 1
    assert ModelVersion.objects.get(number=2).status == ModelVersion.Status.RETIRED
    assert operator_client.get("/model/status").json()["production_version"] == 1


def test_it_answers_404_for_an_unknown_version_and_409_for_an_unusable_one(operator_client, settings):
    production = install_version(number=1, status=ModelVersion.Status.PRODUCTION)
    corrupt = install_version(number=2, status=ModelVersion.Status.CANDIDATE)
    (settings.DUKE_MODEL_DIR / corrupt.artifact_path).write_bytes(b"tampered")
    ModelVersion.objects.create(number=3, status=ModelVersion.Status.FAILED, error="x")

    response = operator_client.post("/model/versions/99/promote")
    assert response.status_code == 404 and response.json()["error"]["code"] == "version_not_found"
    assert operator_client.post("/model/versions/999999999999/promote").status_code == 404
    response = operator_client.post("/model/versions/2/promote")
    assert response.status_code == 409 and response.json()["error"]["code"] == "artifact_invalid"
    response = operator_client.post("/model/versions/3/promote")
    assert response.status_code == 409 and response.json()["error"]["code"] == "version_not_promotable"
    production.refresh_from_db()
    assert production.status == ModelVersion.Status.PRODUCTION


def test_it_queues_a_training_from_the_admin_button(
    admin_client, monkeypatch, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    record_samples(60)
    enqueued: list = []
    monkeypatch.setattr("duke.queue.enqueue_training", lambda *args: enqueued.append(args))
    changelist = reverse("admin:duke_modelversion_changelist")
    assert "Train a new version now" in admin_client.get(changelist).content.decode()
    train_url = reverse("admin:duke_modelversion_train")
    assert admin_client.get(train_url).status_code == 405  # a state change is a POST

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(train_url, follow=True)
    assert response.redirect_chain[-1][0] == changelist
    assert "Training queued on" in response.content.decode()
    assert enqueued == [("operator",)]


def test_it_promotes_the_one_selected_version_with_the_admin_action(admin_client):
    from django.urls import reverse

    install_version(number=1, status=ModelVersion.Status.PRODUCTION)
    second = install_version(number=2, status=ModelVersion.Status.CANDIDATE, swapped=True)
    changelist = reverse("admin:duke_modelversion_changelist")

    both = ModelVersion.objects.values_list("pk", flat=True)
    response = admin_client.post(
        changelist, {"action": "promote_version", "_selected_action": list(both)}, follow=True
    )
    assert "Select exactly one version" in response.content.decode()
    assert ModelVersion.objects.get(number=1).status == ModelVersion.Status.PRODUCTION

    response = admin_client.post(
        changelist, {"action": "promote_version", "_selected_action": [second.pk]}, follow=True
    )
    assert "Duke v2 is now production." in response.content.decode()
    assert ModelVersion.objects.get(number=2).status == ModelVersion.Status.PRODUCTION
    assert ModelVersion.objects.get(number=1).status == ModelVersion.Status.RETIRED
