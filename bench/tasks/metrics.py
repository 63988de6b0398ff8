"""Evaluation: loss, accuracy and macro-F1 of a classifier, with `evaluate` metrics that load offline."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_MODULES = Path(__file__).parent / "evaluate_modules"


@cache
def metric(name: str) -> Any:
    """The `evaluate` metric module shipped in `evaluate_modules/<name>`, loaded once (offline)."""
    import evaluate

    return evaluate.load(str(_MODULES / name))


def load_metrics(*names: str) -> None:
    """Load the metric modules now: `evaluate` imports their code (and scikit-learn) on first use."""
    for name in names or ("accuracy", "f1"):
        metric(name)


def classification_scores(predictions: list[int], references: list[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (macro, so a classifier that ignores the minority class is not flattered)."""
    accuracy = metric("accuracy").compute(predictions=predictions, references=references)["accuracy"]
    f1 = metric("f1").compute(predictions=predictions, references=references, average="macro")["f1"]
    return {"eval/accuracy": accuracy, "eval/f1": f1}


def evaluate_classifier(model: torch.nn.Module, loader: Any, *, device: torch.device,
                        autocast_dtype: torch.dtype) -> dict[str, float]:
    """Mean cross-entropy over the eval set (weighted by rows) plus accuracy and F1."""
    import torch

    was_training = model.training
    model.eval()
    predictions: list[int] = []
    references: list[int] = []
    loss_sum, rows = 0.0, 0
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            output = model(**batch)
            loss_sum += float(output.loss) * len(batch["labels"])
            rows += len(batch["labels"])
            predictions += output.logits.argmax(-1).tolist()
            references += batch["labels"].tolist()
    model.train(was_training)
    return {"eval/loss": loss_sum / rows, **classification_scores(predictions, references)}
