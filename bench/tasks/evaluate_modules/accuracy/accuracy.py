"""Accuracy as an `evaluate` metric module that loads offline (`evaluate.load(<this folder>)`).

The hub's `accuracy` script cannot be fetched here; this is the same metric, computed by scikit-learn.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score


class Accuracy(evaluate.Metric):
    """Share of predictions equal to the reference label."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Proportion of correct predictions.",
            citation="",
            inputs_description="predictions and references: lists of integer class ids",
            features=datasets.Features({"predictions": datasets.Value("int32"),
                                        "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return {"accuracy": float(accuracy_score(references, predictions, normalize=normalize,
                                                 sample_weight=sample_weight))}
