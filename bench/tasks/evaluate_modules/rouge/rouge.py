"""ROUGE-L as an `evaluate` metric module that loads offline (`evaluate.load(<this folder>)`).

The hub's `rouge` script cannot be fetched here; this is the same F-measure, computed by Google's `rouge_score`
package (the hub module's own backend): the longest common subsequence of words, averaged over the examples.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer


class Rouge(evaluate.Metric):
    """Mean ROUGE-L F-measure of generated texts against their references (1: the same words in order)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-L F-measure, mean over examples.",
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004",
            inputs_description="predictions and references: lists of strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, use_stemmer=False):
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
        scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]
        return {"rougeL": float(sum(scores) / len(scores)) if scores else 0.0}
