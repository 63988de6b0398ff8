"""F1 as an `evaluate` metric module that loads offline (`evaluate.load(<this folder>)`).

The hub's `f1` script cannot be fetched here; this is the same metric, computed by scikit-learn.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    """Harmonic mean of precision and recall; `average="macro"` weighs every class equally."""

    def _info(self):
        return evaluate.MetricInfo(
            description="F1 score.",
            citation="",
            inputs_description="predictions and references: lists of integer class ids",
            features=datasets.Features({"predictions": datasets.Value("int32"),
                                        "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, labels=None, average="macro", sample_weight=None):
        score = f1_score(references, predictions, labels=labels, average=average, sample_weight=sample_weight,
                         zero_division=0)
        return {"f1": float(score)}
