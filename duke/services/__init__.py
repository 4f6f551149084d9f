"""Writes on Duke's data; wires the pure model code to the ORM.

- `samples`: `sample_record` (one per completed task; the watermark), `sample_correct`,
  `samples_encode_missing`, `samples_encode_backlog` (the queued encoder, one at a time).
- `versions`: `model_train` (the training job) and the minimums a version needs.
- `operators`: `model_promote` (promote or roll back), `model_request_training` (train now).
- `evaluation`: a version's out-of-fold metrics, certified thresholds and the promotion gate.
- `audit`: the tasks Duke served, their live audit, buyers' verdicts, suspension and the live
  re-certification of thresholds (`routing_evaluate`, `routing_recertify`).

Training and encoding are CPU work of seconds; they never run inside a transaction (SQLite's IMMEDIATE
transactions would hold the write lock for all of it). Each database step they take is atomic on its own.
"""

from duke.services.evaluation import Evaluation, Verdict, evaluate, promotion_gate
from duke.services.operators import TrainingRequest, model_promote, model_request_training
from duke.services.samples import (
    sample_correct,
    sample_record,
    samples_encode_backlog,
    samples_encode_missing,
    split_for,
    training_trigger,
)
from duke.services.versions import model_train, training_shortfall

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
    "training_shortfall",
    "training_trigger",
]
