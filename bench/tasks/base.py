"""What differs between tasks: their data, their metrics and how they evaluate. The run skeleton
(`bench.run.runner`) does everything else, the same way for every task: the monitor, building the technique,
the training loop, Ctrl-C, measuring and shipping.

Two tasks implement it: `bench.tasks.classification` (a classifier head on the model) and `bench.tasks.causal.task`
(instruction SFT of a causal LM, with forgetting measured on general text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bench.config import ModelConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from bench.models.load import ModelLocation


@dataclass
class TaskData:
    """A task's data, read before the tokenizer and batched before the model loads."""

    head_labels: list[str] | None  # a classifier head's label set; None: a causal LM keeps its own LM head
    splits: Any  # the task's own split object
    metrics: dict[str, float] = field(default_factory=dict)  # known before training: rows, majority baseline
    tags: dict[str, str] = field(default_factory=dict)
    train_loader: Any = None  # batches, filled by `Task.make_batches`
    eval_data: Any = None  # what `Task.evaluate` reads: the validation split
    test_data: Any = None  # the test split, in the same form, read once after training


class Task(Protocol):
    """One task's data, metrics and evaluation; `bench.run.runner.task_for(cfg)` makes it with the run's config."""

    def check_model(self, spec: ModelConfig, location: ModelLocation) -> None:
        """Checks from the model's config alone, before any data loads."""

    def load_libraries(self) -> None:
        """Import (and load) what evaluation uses, before the memory baseline: nothing enters the measured
        window late."""

    def load_data(self) -> TaskData:
        """Read, clean and split the data (no tokenizer yet)."""

    def input_frames(self, data: TaskData) -> dict[str, Any]:
        """The rows of each split as the run reads them (`train`, `validation`, `test` -> a pandas frame with the
        task's target column), for the run's MLflow dataset inputs (`bench.tracking.datasets`)."""

    def make_batches(self, data: TaskData, tokenizer: PreTrainedTokenizerBase) -> None:
        """Tokenize and batch everything the run will read, before the model loads."""

    def evaluate(self, model: torch.nn.Module, eval_data: Any, *, device: torch.device,
                 autocast_dtype: torch.dtype) -> dict[str, float]:
        """`eval/*` metrics of the model on the evaluation data (the training loop calls it each epoch)."""

    def after_build(self, model: torch.nn.Module, data: TaskData, *, device: torch.device,
                    autocast_dtype: torch.dtype) -> dict[str, float]:
        """Once the model is built, before training: what the task measures on the untrained model."""

    def after_training(self, model: torch.nn.Module, data: TaskData, before: dict[str, float], *, device: torch.device,
                       autocast_dtype: torch.dtype) -> dict[str, float]:
        """After training, outside the training figures: what the task measures on the trained model."""

    def evaluate_test(self, model: torch.nn.Module, data: TaskData, *, device: torch.device,
                      autocast_dtype: torch.dtype) -> dict[str, float]:
        """`test/*` metrics of the trained model on the test split: once, after training and every choice made
        on validation, outside the training figures."""

    def sample_batch(self, data: TaskData) -> dict[str, Any]:
        """One evaluation batch of model inputs, for checks on the trained model (a merge's error)."""

    def test_batch(self, data: TaskData, rows: int) -> dict[str, Any]:
        """The first `rows` rows of the test split as one padded batch of model inputs, labels included: what
        `bench.measure.deploy` compares the served forms on and times them with."""

    def result_line(self, final: dict[str, float]) -> str:
        """The headline figures of a finished run, for the line that says where the results are."""


PACKED_COUNTS = "packed_counts"  # a packed batch's (examples, real tokens): it has no padding mask to count them from


def batch_counts(batch: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    """(the model's inputs, examples, non-padding tokens) of a training batch. A padded batch counts its rows and
    its attention mask; a packed one (bench.tasks.causal.pack) carries its counts, which are not model inputs."""
    if PACKED_COUNTS in batch:
        examples, tokens = (int(n) for n in batch[PACKED_COUNTS].tolist())
        return {k: v for k, v in batch.items() if k != PACKED_COUNTS}, examples, tokens
    return batch, len(batch["labels"]), int(batch["attention_mask"].sum())


def as_test(metrics: dict[str, float]) -> dict[str, float]:
    """`eval/accuracy` -> `test/accuracy`: the figures `Task.evaluate` computes, named for the test split."""
    return {f"test/{key.removeprefix('eval/')}": value for key, value in metrics.items()}
