"""Writes on Duke's data; wires the pure model code to the ORM.

- `samples`: `sample_record` (one per completed task; the watermark), `sample_correct`,
  `samples_encode_missing`, `samples_encode_backlog` (the queued encoder, one at a time).
- `versions`: `model_train` (the training job), `model_promote` (operators: promote or roll back),
  `model_request_training` (operators: train now).

Training and encoding are CPU work of seconds; they never run inside a transaction (SQLite's IMMEDIATE
transactions would hold the write lock for all of it). Each database step they take is atomic on its own.
"""

from duke.services.samples import (
    sample_correct,
    sample_record,
    samples_encode_backlog,
    samples_encode_missing,
    split_for,
    training_trigger,
)
from duke.services.versions import (
    Evaluation,
    TrainingRequest,
    Verdict,
    evaluate,
    model_promote,
    model_request_training,
    model_train,
    promotion_gate,
)

__all__ = [
    "Evaluation",
    "TrainingRequest",
    "Verdict",
    "evaluate",
    "model_promote",
    "model_request_training",
    "model_train",
    "promotion_gate",
    "sample_correct",
    "sample_record",
    "samples_encode_backlog",
    "samples_encode_missing",
    "split_for",
    "training_trigger",
]
