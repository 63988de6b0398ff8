"""The causal-LM task (`task=causal_lm`): instruction SFT with the loss on the answer, scored by answer
perplexity, label accuracy by likelihood (when the answers are a label set) or the exact match of generated
answers (`data.scoring`, `bench.tasks.causal.scoring`), and forgetting.

Forgetting is `eval/general_loss_after - eval/general_loss_before`, both on the same general English chunks
(`bench.tasks.causal.general`) and the model as built for the technique: for QLoRA "before" is the 4-bit base, so
the number is what training changed, not what quantization did.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from bench.config import ModelConfig, RunConfig
from bench.tasks.base import TaskData, as_test

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from bench.models.load import ModelLocation


class CausalTask:
    """`bench.tasks.base.Task` for supervised fine-tuning of a causal LM."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def check_model(self, spec: ModelConfig, location: ModelLocation) -> None:
        from bench.models.causal import check_causal_head

        check_causal_head(spec, location)  # from the config alone, before any data or weights
        if self.cfg.data.generation_scored:
            self._check_generation_context(spec, location)

    def _check_generation_context(self, spec: ModelConfig, location: ModelLocation) -> None:
        """A prompt of up to `data.max_length` tokens and `data.max_new_tokens` new ones must fit the context."""
        from bench.config import ConfigError
        from bench.models.load import model_limits

        data = self.cfg.data
        limit = spec.architecture.get("max_position_embeddings") if location.is_tiny else model_limits(location,
                                                                                                     spec)[1]
        if limit and data.max_length + data.max_new_tokens > limit:
            raise ConfigError(f"data.max_new_tokens={data.max_new_tokens} runs past model={spec.name}'s context of "
                              f"{limit} tokens after a prompt of up to data.max_length={data.max_length}; choose "
                              f"data.max_new_tokens <= {max(limit - data.max_length, 0)} or lower data.max_length")

    def load_libraries(self) -> None:
        from bench.tasks.metrics import load_metrics

        load_metrics("accuracy", "f1", *(["rouge"] if self.cfg.data.generation_scored else []))

    def load_data(self) -> TaskData:
        from bench.tasks.causal.sft import load_sft_splits

        spec = self.cfg.data
        splits = load_sft_splits(spec)
        scoring = ({"eval/scoring": "generation", "eval/answer_rule": spec.rule} if spec.generation_scored
                   else {"eval/scoring": "likelihood"})  # DataConfig: likelihood scoring needs a label set
        return TaskData(head_labels=None, splits=splits, metrics=splits.metrics(),
                        tags={"labels": str(splits.labels), **scoring})

    def input_frames(self, data: TaskData) -> dict[str, Any]:
        import json

        import pandas as pd

        def frame(pairs: list[Any]) -> Any:  # a chat prompt (its turns) as its JSON text
            prompts = [p.prompt if isinstance(p.prompt, str) else json.dumps(p.prompt, ensure_ascii=False)
                       for p in pairs]
            return pd.DataFrame({"prompt": prompts, "response": [p.response for p in pairs]},
                                columns=["prompt", "response"])

        splits = data.splits
        return {"train": frame(splits.train), "validation": frame(splits.eval), "test": frame(splits.test)}

    def make_batches(self, data: TaskData, tokenizer: PreTrainedTokenizerBase) -> None:
        """Every batch the run needs, made before the model loads, so the monitor's baseline holds the data and
        its net peaks are the model's and the training's alone."""
        from bench.tasks.causal.encode import eval_set, pick_format, train_loader
        from bench.tasks.causal.general import general_rows, source_name
        from bench.tasks.causal.pack import packed_loader

        cfg, splits = self.cfg, data.splits
        fmt = pick_format(tokenizer, cfg.data.prompt_format)
        data.tags.update({"prompt_format": "chat" if fmt.chat else "plain", "forgetting/text": source_name()})
        length = cfg.data.max_length
        loader = packed_loader if cfg.data.packing else train_loader  # packed: several examples a row
        data.train_loader = loader(splits.train, tokenizer=tokenizer, fmt=fmt, max_length=length,
                                   batch_size=cfg.trainer.batch_size, seed=cfg.seed)
        # generation scoring: only the right answer's likelihood (loss, perplexity); the answers are generated
        answers = None if cfg.data.generation_scored else splits.answers
        data.eval_data = eval_set(splits.eval, answers, tokenizer=tokenizer, fmt=fmt, max_length=length)
        data.test_data = eval_set(splits.test, answers, tokenizer=tokenizer, fmt=fmt, max_length=length)
        if cfg.data.generation_scored:
            from bench.tasks.causal.scoring import generation_set

            for pairs, evaluated in ((splits.eval, data.eval_data), (splits.test, data.test_data)):
                evaluated.generation = generation_set(pairs, spec=cfg.data, labels=splits.labels, tokenizer=tokenizer,
                                                      fmt=fmt)
        self._general = general_rows(tokenizer, chunks=cfg.data.general_eval_chunks, length=length, bos=fmt.bos)
        self._pad_id = tokenizer.pad_token_id

    def evaluate(self, model: torch.nn.Module, eval_data: Any, *, device: torch.device,
                 autocast_dtype: torch.dtype) -> dict[str, float]:
        from bench.tasks.causal.metrics import evaluate_sft

        return evaluate_sft(model, eval_data, device=device, autocast_dtype=autocast_dtype,
                            batch_size=self.cfg.trainer.eval_batch_size)

    def _general_loss(self, model: torch.nn.Module, *, device: torch.device, autocast_dtype: torch.dtype) -> float:
        from bench.tasks.causal.metrics import general_loss

        return general_loss(model, rows=self._general, device=device, autocast_dtype=autocast_dtype,
                            batch_size=self.cfg.trainer.eval_batch_size, pad_id=self._pad_id)

    def after_build(self, model: torch.nn.Module, data: TaskData, *, device: torch.device,
                    autocast_dtype: torch.dtype) -> dict[str, float]:
        model.config.use_cache = False  # no KV cache while training or scoring: it would only cost memory
        return {"eval/general_loss_before": self._general_loss(model, device=device, autocast_dtype=autocast_dtype)}

    def after_training(self, model: torch.nn.Module, data: TaskData, before: dict[str, float], *, device: torch.device,
                       autocast_dtype: torch.dtype) -> dict[str, float]:
        after = self._general_loss(model, device=device, autocast_dtype=autocast_dtype)
        return {"eval/general_loss_after": after, "eval/forgetting": after - before["eval/general_loss_before"]}

    def evaluate_test(self, model: torch.nn.Module, data: TaskData, *, device: torch.device,
                      autocast_dtype: torch.dtype) -> dict[str, float]:
        tested = as_test(self.evaluate(model, data.test_data, device=device, autocast_dtype=autocast_dtype))
        baseline = data.splits.test_baseline
        return {**tested, **({} if baseline is None else {"test/majority_baseline": baseline})}

    def sample_batch(self, data: TaskData) -> dict[str, Any]:
        from bench.tasks.causal.encode import collate

        return collate(data.eval_data.rows[:self.cfg.trainer.eval_batch_size], pad_id=self._pad_id)

    def test_batch(self, data: TaskData, rows: int) -> dict[str, Any]:
        from bench.tasks.causal.encode import collate

        return collate(data.test_data.rows[:rows], pad_id=self._pad_id)

    def result_line(self, final: dict[str, float]) -> str:
        name = "exact_match" if self.cfg.data.generation_scored else "accuracy"
        accuracy, tested = final.get(f"eval/{name}", math.nan), final.get(f"test/{name}", math.nan)
        labelled = "" if math.isnan(accuracy) else f"eval/{name} {accuracy:.4f}, "
        test = f"; test/perplexity {final['test/perplexity']:.3f}"
        test += "" if math.isnan(tested) else f", test/{name} {tested:.4f}"
        return (f"{labelled}eval/perplexity {final['eval/perplexity']:.3f}, eval/forgetting "
                f"{final['eval/forgetting']:+.4f} (general English loss {final['eval/general_loss_before']:.4f} -> "
                f"{final['eval/general_loss_after']:.4f}){test}")

