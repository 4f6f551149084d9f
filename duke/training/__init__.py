"""Training Duke's head. Pure torch/numpy: no Django import.

The two views are fitted separately and then mixed, because what works for one hurts the other:
- the embedding view is a multinomial logistic regression solved exactly (L-BFGS, full batch) with its
  L2 strength chosen on held-out data, since the right prior differs a lot between task types;
- the n-gram view is fastText-style (hashed n-grams -> EmbeddingBag -> linear), trained with
  sparse Adagrad and early stopping.
Held-out data (K-fold cross-fitting below `cv_below` samples, one stratified slice above) chooses the
L2 strength, the number of n-gram epochs, the weight of each view and the temperatures. The
embedding view is then refitted on every sample given; the n-gram view too below `refit_below`
samples (above, it keeps its best held-out epoch: retraining would double the time for ~0.1 point).
The out-of-fold predictions of the mixed model (`TrainedModel.out_of_fold`, never stored in an
artifact) give every held-out sample a prediction from a model that never saw it: below `cv_below` every
sample, and they calibrate the routing thresholds (duke.certification). Since the epochs, mix and
temperatures are chosen on those same predictions, they are slightly optimistic; the final model, fitted
on all samples, is usually a little better than the fold models, which works the other way.

The views share nothing until they are mixed, so with two cores the embedding view is fitted in a
second thread while this one extracts the n-grams and trains their view; every op runs on one
thread, so the weights are the same whether there is one core or two.

`train` is deterministic: the same seed and the same samples in the same order give the same
weights, metrics and predictions.
"""

from __future__ import annotations

from duke.training.config import TrainConfig
from duke.training.fit import train

__all__ = ["TrainConfig", "train"]
