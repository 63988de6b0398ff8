"""What a bench run ships, as an MLflow pyfunc model: `mlflow.pyfunc.load_model("models:/<id>")` gives a model
whose `predict` takes texts and returns what the trained model says about them.

Logged as MLflow "models from code" (bench.tracking.logged_models): MLflow copies this file into the model, so
loading it needs mlflow, torch, transformers and peft (bitsandbytes for a 4-bit base), not bench; nothing here
imports bench. The model's `model_config` says what to build:
- `form`: `adapter` (a peft adapter on a base it names: `base`, with `base_revision` and, for a 4-bit base, the
  bitsandbytes `quantization` it trained against), or a whole model folder (`model`: full fine-tuning's weights, a
  merged form);
- `task`: `classification` (input column `text`; output one `logit_<label>` column per label and `label`) or
  `causal_lm` (input column `prompt`; output `response`, greedy, `max_new_tokens` as a param, default 32);
- `dtype`, `autocast_dtype`, `max_length`, `labels`: as the run computed its scores.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class ShippedModel(PythonModel):
    """A run's adapter (on its base) or a whole model, with its tokenizer."""

    def load_context(self, context: Any) -> None:
        import torch
        from transformers import AutoTokenizer

        config = context.model_config
        self.task, self.labels = config["task"], list(config.get("labels") or [])
        self.max_length = int(config["max_length"])
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.autocast = getattr(torch, config["autocast_dtype"])
        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["tokenizer"])
        dtype = getattr(torch, config["dtype"])
        if config["form"] == "adapter":
            from peft import PeftModel

            base = self._load(config["base"], dtype=dtype, quantization=config.get("quantization"),
                              revision=config.get("base_revision"), new_head=True)
            self.model = PeftModel.from_pretrained(base, context.artifacts["adapter"])
        else:
            self.model = self._load(context.artifacts["model"], dtype=dtype, quantization=None, revision=None,
                                    new_head=False)
        self.model.eval()

    def _load(self, source: str, *, dtype: Any, quantization: dict | None, revision: str | None,
              new_head: bool) -> Any:
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

        options: dict[str, Any] = {"dtype": dtype, "device_map": {"": str(self.device)}}
        if revision:
            options["revision"] = revision
        if quantization:
            options["quantization_config"] = BitsAndBytesConfig.from_dict(quantization)
        if self.task == "causal_lm":
            return AutoModelForCausalLM.from_pretrained(source, **options)
        ids = {label: i for i, label in enumerate(self.labels)}
        return AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(self.labels), id2label={i: label for label, i in ids.items()}, label2id=ids,
            ignore_mismatched_sizes=new_head, **options)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.task == "causal_lm":
            return self._generate(list(model_input["prompt"]), int((params or {}).get("max_new_tokens", 32)))
        return self._classify(list(model_input["text"]))

    def _classify(self, texts: list[str], batch: int = 64) -> pd.DataFrame:
        import torch

        rows = []
        for start in range(0, len(texts), batch):
            encoded = self.tokenizer(texts[start:start + batch], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt").to(self.device)
            with torch.no_grad(), self._autocast():
                rows.append(self.model(**encoded).logits.float().cpu())
        logits = torch.cat(rows) if rows else torch.empty(0, len(self.labels))
        frame = pd.DataFrame(logits.numpy(), columns=[f"logit_{label}" for label in self.labels])
        frame["label"] = [self.labels[i] for i in logits.argmax(-1).tolist()]
        return frame

    def _generate(self, prompts: list[str], new_tokens: int) -> pd.DataFrame:
        import torch

        answers = []
        for prompt in prompts:
            encoded = self.tokenizer(prompt, return_tensors="pt", return_token_type_ids=False).to(self.device)
            with torch.no_grad(), self._autocast():
                out = self.model.generate(**encoded, max_new_tokens=new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
            answers.append(self.tokenizer.decode(out[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True))
        return pd.DataFrame({"response": answers})

    def _autocast(self) -> Any:
        import torch

        return torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast != torch.float32)


mlflow.models.set_model(ShippedModel())
