"""Training hyper-parameters."""

from __future__ import annotations

from dataclasses import dataclass

from duke.features import CHAR_NGRAM_SIZES


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults were tuned on the R8 and Rotten Tomatoes learning curves."""

    n_buckets: int = 1 << 18
    ngram_dim: int = 16
    char_sizes: tuple[int, ...] = CHAR_NGRAM_SIZES
    max_tokens: int = 400
    # Weight of the log2 length-bucket token in the n-gram bag (0 leaves it out): chosen on
    # cross-validation inside the training splits, see docs/BENCHMARKS.md.
    length_weight: float = 0.5
    # Cross-fitting folds below this many samples: every sample then gets an out-of-fold prediction,
    # and all of them calibrate the routing threshold. Above, one held-out slice (cheaper).
    cv_below: int = 4000
    folds: int = 5
    # From this many samples on, fewer folds: each fold's model already sees plenty, and training time
    # grows with folds x samples (a version must train well within a watermark's interval).
    fewer_folds_from: int = 1000
    fewer_folds: int = 3
    holdout_fraction: float = 0.1
    max_holdout: int = 1000
    # Inverse L2 strengths tried for the embedding view (scikit-learn's C convention).
    c_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
    lbfgs_iters: int = 200
    lr_bag: float = 0.3
    lr_head: float = 0.03
    weight_decay: float = 1e-4
    max_epochs: int = 40
    min_steps: int = 300
    max_batch: int = 64
    patience: int = 6
    # With one large held-out slice an epoch is expensive and the held-out score is less noisy.
    patience_holdout: int = 2
    # Below this many samples the n-gram view is retrained on all of them once the epoch count is
    # known; above it the held-out slice costs little accuracy and retraining would double the time.
    refit_below: int = 2000
    mix_by_nll: bool = True
    # Serving reads the n-gram view first: a text whose n-gram-only probability reaches this is answered
    # by the n-gram view (label and confidence) and never encoded; below it, by the mixed model with the
    # text's embedding. Fixed before any data is seen, stored in the artifact, and the thresholds are
    # certified on this very rule's out-of-fold answers (duke.model.TrainedModel.predict_served).
    # None: always the mixed model.
    ngram_first: float | None = 0.97
    c_by_nll: bool = True
