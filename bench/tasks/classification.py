"""The classification task (`task=classification`): a head on the model, trained on labelled text, scored by
accuracy and macro-F1 against the majority-class baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.config import ModelConfig, RunConfig
from bench.tasks.base import TaskData, as_test

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from bench.models.load import ModelLocation


class ClassificationTask:
    """`bench.tasks.base.Task` for a sequence classifier."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def check_model(self, spec: ModelConfig, location: ModelLocation) -> None:
        """Any transformers model can take a classification head: nothing to check before the data."""

    def load_libraries(self) -> None:
        from bench.tasks.metrics import load_metrics

        load_metrics()

    def load_data(self) -> TaskData:
        from bench.tasks.data import load_splits

        splits = load_splits(self.cfg.data)
        return TaskData(head_labels=splits.labels, splits=splits, metrics=splits.metrics())

    def input_frames(self, data: TaskData) -> dict[str, Any]:
        splits = data.splits
        return {context: part.assign(label=[splits.labels[i] for i in part["label_id"]])[["text", "label"]]
                for context, part in (("train", splits.train), ("validation", splits.eval), ("test", splits.test))}

    def make_batches(self, data: TaskData, tokenizer: PreTrainedTokenizerBase) -> None:
        from bench.tasks.data import eval_loader, make_loaders

        trainer, length = self.cfg.trainer, self.cfg.data.max_length
        data.train_loader, data.eval_data = make_loaders(
            data.splits, tokenizer=tokenizer, max_length=length, batch_size=trainer.batch_size,
            eval_batch_size=trainer.eval_batch_size, seed=self.cfg.seed)
        data.test_data = eval_loader(data.splits.test, tokenizer=tokenizer, max_length=length,
                                     batch_size=trainer.eval_batch_size)

    def evaluate(self, model: torch.nn.Module, eval_data: Any, *, device: torch.device,
                 autocast_dtype: torch.dtype) -> dict[str, float]:
        from bench.tasks.metrics import evaluate_classifier

        return evaluate_classifier(model, eval_data, device=device, autocast_dtype=autocast_dtype)

    def after_build(self, model: torch.nn.Module, data: TaskData, *, device: torch.device,
                    autocast_dtype: torch.dtype) -> dict[str, float]:
        return {}

    def after_training(self, model: torch.nn.Module, data: TaskData, before: dict[str, float], *, device: torch.device,
                       autocast_dtype: torch.dtype) -> dict[str, float]:
        return {}

    def evaluate_test(self, model: torch.nn.Module, data: TaskData, *, device: torch.device,
                      autocast_dtype: torch.dtype) -> dict[str, float]:
        tested = as_test(self.evaluate(model, data.test_data, device=device, autocast_dtype=autocast_dtype))
        return {**tested, "test/majority_baseline": data.splits.test_baseline}

    def sample_batch(self, data: TaskData) -> dict[str, Any]:
        return _first_rows(data.eval_data, data.eval_data.batch_size)

    def test_batch(self, data: TaskData, rows: int) -> dict[str, Any]:
        return _first_rows(data.test_data, rows)

    def result_line(self, final: dict[str, float]) -> str:
        return (f"eval/accuracy {final['eval/accuracy']:.4f}, "
                f"majority baseline {final['eval/majority_baseline']:.4f}; "
                f"test/accuracy {final['test/accuracy']:.4f} (majority {final['test/majority_baseline']:.4f})")


def _first_rows(loader: Any, rows: int) -> dict[str, Any]:
    """A batch of the split's first `rows` rows, whatever order evaluation takes them in (shortest first)."""
    return loader.collate_fn([loader.dataset[i] for i in range(min(rows, len(loader.dataset)))])
