"""Training, evaluation, the promotion gate, promotion/rollback and the retraining watermark."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import numpy as np
import pytest
from django.core.cache import cache
from django.db import connection

from core.exceptions import Conflict, NotFound
from duke import registry
from duke.certification import LTT_PROCEDURE
from duke.encoder import EMBEDDING_DIM, ENCODER_ID, embedding_from_bytes
from duke.models import ModelVersion, SampleCounter, TrainingData, TrainingTrigger
from duke.services import (
    model_promote,
    model_request_training,
    model_train,
    sample_correct,
    sample_record,
    samples_encode_backlog,
    samples_encode_missing,
)
from duke.services.samples import ENCODER_LEASE_KEY
from duke.training import train as real_train
from tests.duke.learning_helpers import (
    LABELS,
    SWAPPED,
    TASK_TYPE,
    install_version,
    record_samples,
    use_fast_training,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_training(settings, monkeypatch):
    use_fast_training(settings)
    settings.DUKE_MIN_VALIDATION = 20
    # Recording never triggers a training here: each test calls model_train itself.
    settings.DUKE_TRAIN_EVERY = 100_000
    # The n-gram view alone learns these topics; the encoder is exercised in the integration tests.
    monkeypatch.setattr("duke.services.samples.encoder_available", lambda: False)
    registry.clear_cache()
    yield
    registry.clear_cache()


def _production() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()


def _fake_production(number: int = 1) -> ModelVersion:
    return ModelVersion.objects.create(number=number, status=ModelVersion.Status.PRODUCTION, accuracy=0.9)


def test_it_trains_a_first_version_and_promotes_it_over_the_majority_baseline(settings, caplog, monkeypatch):
    settings.DUKE_TARGET_AGREEMENT = 0.8
    record_samples(120, split="train")
    record_samples(30, split="validation", seed=1)
    seen: list[tuple[int, int]] = []

    def observed_train(samples, *, progress, **kwargs):
        def spy(epoch: int, epochs: int) -> None:
            progress(epoch, epochs)
            row = ModelVersion.objects.get(status=ModelVersion.Status.TRAINING)
            seen.append((row.epoch, row.epochs))

        return real_train(samples, progress=spy, **kwargs)

    monkeypatch.setattr("duke.services.versions.train", observed_train)
    with caplog.at_level(logging.INFO, logger="duke"):
        version = model_train()

    assert version is not None and version.number == 1
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.PRODUCTION and version.promoted_at is not None
    # Every sample trains, and every one is judged out-of-fold (by a fold model that never saw it).
    assert (version.train_samples, version.validation_samples) == (150, 150)
    assert version.trained_up_to == TrainingData.objects.order_by("-pk").first().pk
    assert version.accuracy >= 0.9 and version.macro_f1 >= 0.9
    assert version.per_task_type[TASK_TYPE]["n"] == 150
    assert version.promotion["against"] == "majority baseline" and version.promotion["promoted"] is True
    assert version.promotion["better"] is True and version.promotion["p_value"] < 0.05
    assert version.promotion["n"] == 150 and version.promotion["trigger"] == "samples"
    # Nearly all of 150 out-of-fold answers right certifies 80% agreement, so routing gets a threshold,
    # stored with its certificate.
    threshold = version.thresholds[TASK_TYPE]
    assert 0 < threshold["threshold"] <= 1 and threshold["validation_samples"] == 150
    assert 0 < threshold["coverage"] <= 1
    certificate = threshold["certificate"]
    assert certificate["procedure"] == LTT_PROCEDURE and certificate["delta"] == settings.DUKE_RISK_DELTA
    assert certificate["target"] == 0.8 and certificate["lower_bound"] >= 0.8
    assert certificate["served"] == round(threshold["coverage"] * 150)
    assert version.promotion["calibration"][TASK_TYPE] == certificate
    # Progress reached the row while training ran, and the last epoch is always written.
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert (version.epoch, version.epochs) == seen[-1] and version.training_seconds > 0
    artifact = settings.DUKE_MODEL_DIR / version.artifact_path
    assert artifact.name == f"v1-{version.artifact_sha256[:12]}.pt" and artifact.exists()
    messages = [record.getMessage() for record in caplog.records]
    assert "Duke training with 150 samples (v1), 0 with embeddings" in messages
    assert any(m.startswith("Duke v1 promoted (accuracy ") and m.endswith("%)") for m in messages)

    monkeypatch.setattr("duke.services.versions.train", real_train)
    second = model_train()
    assert second.number == 2 and second.status == ModelVersion.Status.CANDIDATE
    assert second.promotion["against"] == "v1" and second.promotion["promoted"] is False
    assert not second.promotion["better"]  # as good as production is not better
    assert _production().number == 1


def test_it_does_not_promote_a_candidate_that_wins_on_only_20_validation_samples(settings):
    settings.DUKE_MIN_VALIDATION = 50
    record_samples(90, split="train")
    record_samples(20, split="validation", seed=1)
    install_version(number=1, status=ModelVersion.Status.PRODUCTION, swapped=True)  # wrong on everything

    right = model_train()
    assert right.number == 2 and right.accuracy >= 0.9
    assert right.promotion["candidate_wins"] >= 18 and right.promotion["against_wins"] == 0
    assert right.promotion["p_value"] < 0.001  # a clear winner on paper …
    assert right.status == ModelVersion.Status.CANDIDATE  # … but 20 samples are not enough evidence
    assert "only 20 paired validation samples (need 50)" in right.promotion["reason"]
    assert _production().number == 1

    record_samples(40, split="validation", seed=2, id_start=10_000)
    better = model_train()
    assert better.status == ModelVersion.Status.PRODUCTION
    assert better.promotion["n"] == 60 and better.promotion["against"] == "v1"
    assert ModelVersion.objects.get(number=1).status == ModelVersion.Status.RETIRED
    assert ModelVersion.objects.get(number=2).status == ModelVersion.Status.CANDIDATE


def test_it_trains_on_buyer_corrections_instead_of_the_llm_labels():
    rows = record_samples(60, split="train", label_map=SWAPPED)  # the "LLM" got every label wrong
    record_samples(20, split="validation", seed=1)
    inverse = {wrong: right for right, wrong in SWAPPED.items()}
    for row in rows:
        sample_correct(task_id=row.task_id, correct_label=inverse[row.output])
    assert set(TrainingData.objects.filter(split="train").values_list("source", flat=True)) == {"buyer"}

    version = model_train()
    assert version.accuracy >= 0.9  # learnt the corrections: with the LLM's labels it would be ~0


@pytest.mark.parametrize("failing_step", ["train", "promotion_gate"])
def test_it_marks_a_failed_training_and_leaves_production_untouched(settings, monkeypatch, failing_step):
    record_samples(60, split="train")
    record_samples(20, split="validation", seed=1)
    production = _fake_production()

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(f"duke.services.versions.{failing_step}", boom)
    version = model_train()

    assert version.number == 2 and version.status == ModelVersion.Status.FAILED
    assert version.error == "RuntimeError: disk on fire" and version.finished_at is not None
    assert version.artifact_path == "" and version.artifact_sha256 == ""
    model_dir = settings.DUKE_MODEL_DIR
    assert not model_dir.exists() or not any(model_dir.iterdir())  # a written artifact is removed
    production.refresh_from_db()
    assert production.status == ModelVersion.Status.PRODUCTION and _production() == production


def test_it_rolls_back_to_an_old_version_by_loading_its_artifact_without_retraining(monkeypatch, caplog):
    record_samples(12, split="train")
    install_version(number=1, status=ModelVersion.Status.RETIRED, swapped=False)
    install_version(number=2, status=ModelVersion.Status.PRODUCTION, swapped=True)

    def no_training(*args, **kwargs):
        raise AssertionError("promotion must never retrain")

    monkeypatch.setattr("duke.services.versions.train", no_training)
    loaded_version, swapped_model = registry.load_production_model()
    assert loaded_version.number == 2
    with caplog.at_level(logging.INFO, logger="duke"):
        rolled = model_promote(number=1, by="ops")

    assert rolled.status == ModelVersion.Status.PRODUCTION
    assert rolled.promotion["manual"]["replaced"] == 2 and rolled.promotion["manual"]["by"] == "ops"
    assert ModelVersion.objects.get(number=2).status == ModelVersion.Status.RETIRED
    assert ModelVersion.objects.count() == 2
    loaded_version, model = registry.load_production_model()
    assert loaded_version.number == 1
    rows = [(row.input_text, LABELS, TASK_TYPE) for row in TrainingData.objects.all()]
    truth = [row.output for row in TrainingData.objects.all()]
    assert [p.label for p in model.predict(_inputs(rows))] == truth  # v1's weights, not v2's
    assert [p.label for p in swapped_model.predict(_inputs(rows))] == [SWAPPED[t] for t in truth]
    assert "Duke rolled back to v1 (from v2) by ops" in [r.getMessage() for r in caplog.records]
    assert model_promote(number=1).status == ModelVersion.Status.PRODUCTION  # idempotent


def _inputs(rows):
    from duke.model import Input

    return [Input(text, tuple(labels), task_type) for text, labels, task_type in rows]


def test_it_refuses_to_promote_a_version_whose_artifact_is_corrupt(settings):
    version = install_version(number=1, status=ModelVersion.Status.CANDIDATE)
    production = _fake_production(number=7)
    path = settings.DUKE_MODEL_DIR / version.artifact_path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(Conflict) as refused:
        model_promote(number=version.number)
    assert refused.value.code == "artifact_invalid" and "corrupt" in refused.value.message
    assert _production() == production

    path.unlink()
    with pytest.raises(Conflict) as missing:
        model_promote(number=version.number)
    assert missing.value.code == "artifact_invalid" and "cannot read" in missing.value.message
    assert _production() == production


def test_it_refuses_to_promote_unknown_failed_or_training_versions():
    ModelVersion.objects.create(number=1, status=ModelVersion.Status.FAILED, error="x")
    ModelVersion.objects.create(number=2, status=ModelVersion.Status.TRAINING)
    with pytest.raises(NotFound):
        model_promote(number=9)
    for number in (1, 2):
        with pytest.raises(Conflict) as refused:
            model_promote(number=number)
        assert refused.value.code == "version_not_promotable"


def test_it_compares_with_the_baseline_when_production_cannot_be_loaded(settings):
    record_samples(90, split="train")
    record_samples(24, split="validation", seed=1)
    ModelVersion.objects.create(
        number=1, status=ModelVersion.Status.PRODUCTION, artifact_path="v1-gone.pt", artifact_sha256="0" * 64
    )
    version = model_train()
    assert version.status == ModelVersion.Status.PRODUCTION
    assert version.promotion["against"] == "majority baseline"
    assert "production v1 unusable" in version.promotion["reason"]
    assert ModelVersion.objects.get(number=1).status == ModelVersion.Status.RETIRED


def test_it_skips_training_while_another_runs_and_catches_up_when_it_finishes(
    monkeypatch, django_capture_on_commit_callbacks
):
    record_samples(60, split="train")
    record_samples(20, split="validation", seed=1)
    TrainingTrigger.objects.create(sample_ordinal=100)
    running = ModelVersion.objects.create(number=1, status=ModelVersion.Status.TRAINING)

    assert model_train() is None
    assert ModelVersion.objects.count() == 1
    assert TrainingTrigger.objects.get(sample_ordinal=100).version is None  # still owed a training

    ModelVersion.objects.filter(pk=running.pk).update(status=ModelVersion.Status.FAILED)
    enqueued: list = []
    monkeypatch.setattr("duke.queue.enqueue_training", lambda *args: enqueued.append(args))

    def train_while_a_watermark_passes(*args, **kwargs):
        # A watermark crossed mid-training: its job would find the slot taken and be skipped.
        TrainingTrigger.objects.create(sample_ordinal=200)
        return real_train(*args, **kwargs)

    monkeypatch.setattr("duke.services.versions.train", train_while_a_watermark_passes)
    with django_capture_on_commit_callbacks(execute=True):
        version = model_train()

    assert version.number == 2 and version.status != ModelVersion.Status.FAILED
    assert TrainingTrigger.objects.get(sample_ordinal=100).version == 2
    assert TrainingTrigger.objects.get(sample_ordinal=200).version is None
    assert len(enqueued) == 1  # one catch-up training for the watermark it missed


def test_it_skips_a_watermark_job_whose_samples_an_earlier_version_already_covered():
    from duke import jobs

    record_samples(30, split="train")
    ModelVersion.objects.create(number=1, status=ModelVersion.Status.CANDIDATE)
    TrainingTrigger.objects.create(sample_ordinal=100, version=1)  # a backlog: v1 covered 100 and 200
    TrainingTrigger.objects.create(sample_ordinal=200, version=1)

    jobs.train()  # the job enqueued for watermark 200 runs late
    assert ModelVersion.objects.count() == 1


def test_it_embeds_recorded_samples_in_batches_through_the_queue(
    settings, monkeypatch, django_capture_on_commit_callbacks
):
    from duke.services.samples import ENCODE_EVERY

    settings.DUKE_ENCODE_ON_RECORD = True
    batches: list[int] = []

    def fake_encode(texts):
        batches.append(len(texts))
        return np.full((len(texts), EMBEDDING_DIM), 0.25, dtype=np.float32)

    monkeypatch.setattr("duke.services.samples.encoder_available", lambda: True)
    monkeypatch.setattr("duke.services.samples.encode_texts", fake_encode)
    with django_capture_on_commit_callbacks(execute=True):
        record_samples(ENCODE_EVERY)
    with django_capture_on_commit_callbacks(execute=True):
        record_samples(1, id_start=ENCODE_EVERY)
    assert batches == [ENCODE_EVERY]  # one job, one forward pass, at the 32nd sample
    missing = TrainingData.objects.filter(embedding__isnull=True)
    assert missing.count() == 1  # the 33rd waits for the next batch (or the next training)


def test_it_skips_training_without_samples():
    assert model_train() is None
    assert not ModelVersion.objects.exists()


def test_it_frees_the_slot_of_a_training_whose_worker_died(settings, monkeypatch):
    record_samples(60, split="train")
    stale = ModelVersion.objects.create(number=1, status=ModelVersion.Status.TRAINING)
    monkeypatch.setattr("duke.queue.enqueue_training", lambda *args: None)
    with pytest.raises(Conflict) as busy:
        model_request_training()
    assert busy.value.code == "training_in_progress"

    from datetime import timedelta

    from django.utils import timezone

    ModelVersion.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(hours=2))
    request = model_request_training()
    assert request.train_samples == 60
    stale.refresh_from_db()
    assert stale.status == ModelVersion.Status.FAILED and stale.error.startswith("abandoned")


def _fake_encoder(monkeypatch, calls: list[list[str]], during: Callable[[], None] = lambda: None) -> None:
    def fake_encode(texts):
        calls.append(list(texts))
        during()
        return np.full((len(texts), EMBEDDING_DIM), 0.5, dtype=np.float32)

    monkeypatch.setattr("duke.services.samples.encoder_available", lambda: True)
    monkeypatch.setattr("duke.services.samples.encode_texts", fake_encode)


def test_it_skips_the_background_encoder_while_another_one_runs(monkeypatch):
    record_samples(3, split="train")
    calls: list[list[str]] = []
    _fake_encoder(monkeypatch, calls)
    assert cache.add(ENCODER_LEASE_KEY, "another worker", 60)
    try:
        assert samples_encode_backlog() == 0
        assert calls == []
    finally:
        cache.delete(ENCODER_LEASE_KEY)
    assert samples_encode_backlog() == 3
    assert cache.get(ENCODER_LEASE_KEY) is None  # the lease is given back


def test_a_pass_that_lost_its_lease_stops_and_leaves_the_new_holders_lease_alone(monkeypatch):
    record_samples(5, split="train")
    monkeypatch.setattr("duke.services.samples._ENCODE_BATCH", 2)
    calls: list[list[str]] = []

    def lease_expires_and_is_taken() -> None:
        # This pass was slower than its lease: another encoder's add() succeeded meanwhile.
        if len(calls) == 1:
            cache.set(ENCODER_LEASE_KEY, "another encoder", 60)

    _fake_encoder(monkeypatch, calls, during=lease_expires_and_is_taken)
    try:
        assert samples_encode_backlog() == 2  # its first batch, then it saw the lease was no longer its
        assert [len(batch) for batch in calls] == [2]
        assert cache.get(ENCODER_LEASE_KEY) == "another encoder"  # neither renewed over nor released
    finally:
        cache.delete(ENCODER_LEASE_KEY)
    assert samples_encode_backlog() == 3  # the rest, by the next pass
    assert cache.get(ENCODER_LEASE_KEY) is None


def test_it_leaves_samples_recorded_during_a_background_pass_to_the_next_one(monkeypatch):
    record_samples(2, split="train")
    calls: list[list[str]] = []

    def record_one_more() -> None:
        if len(calls) == 1:
            record_samples(1, split="train", id_start=100)

    _fake_encoder(monkeypatch, calls, during=record_one_more)
    assert samples_encode_backlog() == 2  # its snapshot: it must not chase arrivals and hold its worker
    assert TrainingData.objects.filter(embedding__isnull=True).count() == 1
    assert samples_encode_backlog() == 1
    assert [len(batch) for batch in calls] == [2, 1]
    assert not TrainingData.objects.filter(embedding__isnull=True).exists()


def test_it_trains_at_once_on_the_embeddings_already_stored_never_waiting_for_the_encoder(monkeypatch):
    rows = record_samples(85, split="train")
    calls: list[list[str]] = []
    _fake_encoder(monkeypatch, calls)
    samples_encode_missing(up_to_pk=rows[39].pk)  # the background encoder got this far
    assert sum(len(batch) for batch in calls) == 40

    def encoder_must_not_run(texts):
        raise AssertionError("the training waited for the encoder")

    monkeypatch.setattr("duke.services.samples.encode_texts", encoder_must_not_run)
    version = model_train()
    assert version.status == ModelVersion.Status.PRODUCTION and version.train_samples == 85
    # The n-gram view learnt from all 85, the embedding view from the 40 embedded ones.
    assert registry.model_load(version).metadata["with_embedding"] == 40


def test_it_encodes_each_missing_embedding_once(monkeypatch):
    samples = record_samples(5, split="train")
    TrainingData.objects.filter(pk=samples[0].pk).update(
        embedding=np.ones(EMBEDDING_DIM, "<f4").tobytes(), embedding_encoder=ENCODER_ID
    )
    calls: list[list[str]] = []

    def fake_encode(texts):
        calls.append(list(texts))
        return np.full((len(texts), EMBEDDING_DIM), 0.5, dtype=np.float32)

    monkeypatch.setattr("duke.services.samples.encoder_available", lambda: True)
    monkeypatch.setattr("duke.services.samples.encode_texts", fake_encode)
    assert samples_encode_missing() == 4
    assert samples_encode_missing() == 0
    assert len(calls) == 1 and len(calls[0]) == 4
    stored = embedding_from_bytes(TrainingData.objects.get(pk=samples[1].pk).embedding)
    assert stored.shape == (EMBEDDING_DIM,) and float(stored[0]) == 0.5
    assert float(embedding_from_bytes(TrainingData.objects.get(pk=samples[0].pk).embedding)[0]) == 1.0


def test_it_re_encodes_an_embedding_another_encoder_made_and_records_which_encoder_made_each(monkeypatch):
    samples = record_samples(3, split="train")
    ones = np.ones(EMBEDDING_DIM, "<f4").tobytes()
    TrainingData.objects.filter(pk=samples[0].pk).update(embedding=ones, embedding_encoder="an-older-encoder")
    TrainingData.objects.filter(pk=samples[1].pk).update(
        embedding=ones, embedding_encoder=""
    )  # before the field
    calls: list[list[str]] = []
    _fake_encoder(monkeypatch, calls)
    assert samples_encode_missing() == 3
    assert samples_encode_missing() == 0
    for row in TrainingData.objects.all():
        assert row.embedding_encoder == ENCODER_ID
        assert float(embedding_from_bytes(row.embedding)[0]) == 0.5  # the new encoder's vector, not the old


def test_a_training_never_mixes_another_encoders_vectors_into_the_embedding_view(monkeypatch):
    rows = record_samples(60, split="train")
    calls: list[list[str]] = []
    _fake_encoder(monkeypatch, calls)
    samples_encode_missing()
    TrainingData.objects.filter(pk__in=[r.pk for r in rows[:20]]).update(embedding_encoder="an-older-encoder")

    def encoder_must_not_run(texts):
        raise AssertionError("the training waited for the encoder")

    monkeypatch.setattr("duke.services.samples.encode_texts", encoder_must_not_run)
    version = model_train()
    assert version is not None and version.train_samples == 60
    assert registry.model_load(version).metadata["with_embedding"] == 40  # the 20 stale ones: n-grams only


def test_it_records_one_sample_per_task_and_counts_only_labeling_samples(settings):
    settings.DUKE_TRAIN_EVERY = 3
    task_id = uuid.uuid4()
    kwargs = dict(text="t", task_type="", complexity=1, labels=["a", "b"], output="a")
    assert sample_record(task_id=task_id, **kwargs) is not None
    assert sample_record(task_id=task_id, **kwargs) is None
    sample_record(task_id=uuid.uuid4(), text="free", task_type="", complexity=1, labels=None, output="x")
    assert SampleCounter.objects.get().samples == 1
    for _ in range(2):
        sample_record(task_id=uuid.uuid4(), **kwargs)
    assert list(TrainingTrigger.objects.values_list("sample_ordinal", flat=True)) == [3]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_triggers_exactly_one_training_per_watermark_under_concurrent_inserts(settings, monkeypatch):
    settings.DUKE_TRAIN_EVERY = 10
    threads_n, per_thread = 8, 10
    trainings: list = []
    lock = threading.Lock()

    def count(*args) -> None:
        with lock:
            trainings.append(args)

    monkeypatch.setattr("duke.queue.enqueue_training", count)
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                sample_record(
                    task_id=uuid.uuid4(),
                    text=f"sample {index}-{i}",
                    task_type=TASK_TYPE,
                    complexity=1,
                    labels=list(LABELS),
                    output=LABELS[i % 3],
                )
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert TrainingData.objects.count() == threads_n * per_thread
    assert SampleCounter.objects.get().samples == threads_n * per_thread
    ordinals = sorted(TrainingTrigger.objects.values_list("sample_ordinal", flat=True))
    assert ordinals == list(range(10, threads_n * per_thread + 1, 10))
    assert len(trainings) == len(ordinals)


def test_it_recalibrates_production_thresholds_when_a_candidate_is_not_promoted(settings):
    # v1 is promoted on too few samples to earn a routing threshold …
    settings.DUKE_TARGET_AGREEMENT = 0.95
    settings.DUKE_MIN_VALIDATION = 30
    record_samples(55, split="train")
    first = model_train()
    assert first.status == ModelVersion.Status.PRODUCTION
    assert TASK_TYPE not in first.thresholds  # 55 of 55 right cannot reject "< 95%" at 5% (0.95**55 > 0.05)

    # … samples it never saw arrive; an equally good v2 is not promoted, but production earns routing on
    # those 130 out-of-sample samples.
    record_samples(130, split="train", seed=2, id_start=20_000)
    second = model_train()
    assert second.status == ModelVersion.Status.CANDIDATE
    first.refresh_from_db()
    assert first.status == ModelVersion.Status.PRODUCTION
    assert first.thresholds[TASK_TYPE]["validation_samples"] == 130
    assert 0 < first.thresholds[TASK_TYPE]["threshold"] <= 1
    assert second.promotion["production_thresholds_recalibrated"] == [TASK_TYPE]


def test_a_watermark_below_the_minimums_skips_with_a_log_line_and_trains_nothing(settings, caplog):
    settings.DUKE_MIN_SAMPLES = 50
    record_samples(30, split="train")
    with caplog.at_level(logging.INFO, logger="duke"):
        assert model_train(only_if_pending=False) is None
    assert not ModelVersion.objects.exists()
    assert any(
        "Duke training skipped: Duke needs at least 50 labeling samples" in r.getMessage()
        for r in caplog.records
    )


def test_it_leaves_out_a_label_with_a_single_sample_and_says_so():
    record_samples(60, split="train")
    record_samples(1, split="train", id_start=5_000, label_map=dict.fromkeys(LABELS, "cooking"))
    version = model_train()
    assert version.train_samples == 60 and version.promotion["left_out"] == {"cooking": 1}


def test_a_watermark_reached_during_a_failed_training_is_still_trained(
    monkeypatch, django_capture_on_commit_callbacks
):
    record_samples(60, split="train")
    enqueued: list = []
    monkeypatch.setattr("duke.queue.enqueue_training", lambda *args: enqueued.append(args))

    def boom_after_a_watermark(*args, **kwargs):
        TrainingTrigger.objects.create(sample_ordinal=200, reason="samples")  # crossed meanwhile
        raise RuntimeError("out of memory")

    monkeypatch.setattr("duke.services.versions.train", boom_after_a_watermark)
    with django_capture_on_commit_callbacks(execute=True):
        version = model_train()
    assert version.status == ModelVersion.Status.FAILED
    assert enqueued == [()]  # the watermark is not lost with the failed training


def test_a_training_hands_production_the_tasks_it_left_to_the_llm_for_live_re_certification(monkeypatch):
    record_samples(90, split="train")
    first = model_train()
    assert first.status == ModelVersion.Status.PRODUCTION
    calls: list[dict] = []
    monkeypatch.setattr("duke.services.versions.routing_recertify", lambda **kwargs: calls.append(kwargs))
    new = record_samples(120, split="train", seed=3, id_start=30_000)
    second = model_train()
    assert second.status == ModelVersion.Status.CANDIDATE
    [call] = calls
    assert call["model_version"] == first.number and call["task_type"] == TASK_TYPE
    # Exactly the samples production never trained on, scored by production: (confidence, agreed, id, at).
    assert sorted(task_id for _, _, task_id, _ in call["below"]) == sorted(s.task_id for s in new)
    assert all(0 < conf <= 1 and agreed is True for conf, agreed, _, _ in call["below"])
