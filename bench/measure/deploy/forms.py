"""The forms a trained model ships in, each saved and loaded back from disk the way a user would serve it.

- `base`: the base model alone, in the form the technique serves it (4-bit for QLoRA and LoftQ), saved once.
- `unmerged`: `base` plus the adapter on top (peft), so one base can serve many adapters.
- `merged16`: the adapter merged into 16-bit weights (the run's float dtype; fp32 only on a device without a
  16-bit one): the base's own, or for a 4-bit technique the 4-bit weights it trained against, dequantized.
- `merged4`: `merged16` quantized again with the technique's own NF4 config (bitsandbytes bases only): the common
  way to serve a QLoRA model small, and where merging loses accuracy, since W + BA does not round to the 4-bit
  grid W did.
- `full`: full fine-tuning's checkpoint, as the run shipped it.
QA-LoRA's HQQ base has no `from_pretrained` path: its forms stay in memory (`bench.measure.deploy.measure`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import MethodConfig, ModelConfig
from bench.models.load import ModelLocation

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig


@dataclass
class Source:
    """Where the run's base comes from and how its models load: what every form is built from."""

    method: MethodConfig
    spec: ModelConfig
    location: ModelLocation
    labels: list[str]
    device: torch.device
    causal: bool
    weights_dtype: torch.dtype  # the run's float dtype for a 16-bit base
    compute_dtype: torch.dtype  # a 4-bit base's float parts, and every merged model

    def _load(self, location: ModelLocation, *, dtype: torch.dtype,
              quantization: BitsAndBytesConfig | None = None) -> Any:
        from bench.models.load import load_causal_lm, load_classifier

        if self.causal:
            return load_causal_lm(location=location, spec=self.spec, dtype=dtype, device=self.device,
                                  quantization=quantization)
        return load_classifier(location=location, spec=self.spec, labels=self.labels, dtype=dtype,
                               device=self.device, quantization=quantization, new_head=location == self.location)

    def load_folder(self, folder: Path, *, dtype: torch.dtype | None = None) -> Any:
        """A model saved by one of the functions below (a 4-bit one says so in its own config.json)."""
        return self._load(ModelLocation("folder", str(folder)), dtype=dtype or self.compute_dtype)

    def quantization(self) -> Any:
        """The technique's NF4 config (the head or LM head kept in float, as when training)."""
        from bench.models.build import PretrainedWeights

        heads = ["lm_head"] if self.causal else PretrainedWeights(
            spec=self.spec, location=self.location, labels=self.labels, device=self.device, causal=False).heads
        return self.method.technique.quantization(self.method, compute_dtype=self.compute_dtype, skip=heads)

    def load_served_base(self) -> Any:
        """The pretrained base from the run's own location, as the technique holds it: in 4 bits for an NF4
        technique, else in the dtype it trained in."""
        if self.method.technique.base == "nf4":
            return self._load(self.location, dtype=self.compute_dtype, quantization=self.quantization())
        return self._load(self.location, dtype=self.weights_dtype)


def save_base(source: Source, folder: Path) -> None:
    """The base as the technique serves it, saved for `unmerged` (and `merged16`) to load."""
    _save(source.load_served_base(), folder)


def load_unmerged(source: Source, base: Path, adapter: Path) -> Any:
    return _with_adapter(source.load_folder(base, dtype=_base_dtype(source)), adapter)


def save_merged16(source: Source, base: Path, adapter: Path, folder: Path) -> None:
    """The adapter merged (peft's `merge_and_unload`) into 16-bit weights: the base's own for a 16-bit technique;
    for a 4-bit one, the 4-bit base it trained against dequantized (transformers' `dequantize`), so the merge is
    the model that trained and not the adapter on weights it never saw."""
    model = source.load_folder(base, dtype=_base_dtype(source))
    if source.method.technique.base == "nf4":
        model = model.dequantize()
    _save(_with_adapter(model, adapter).merge_and_unload(), folder)


def _with_adapter(base: torch.nn.Module, adapter: Path) -> Any:
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to answer
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing", category=FutureWarning)
        return PeftModel.from_pretrained(base, str(adapter))


def save_merged4(source: Source, merged16: Path, folder: Path) -> None:
    """`merged16` quantized again to 4 bits with the technique's NF4 config, then saved in 4 bits."""
    model = source._load(ModelLocation("folder", str(merged16)), dtype=source.compute_dtype,
                         quantization=source.quantization())
    _save(model, folder)


def _base_dtype(source: Source) -> Any:
    return source.compute_dtype if source.method.technique.quantized else source.weights_dtype


def _save(model: torch.nn.Module, folder: Path) -> None:
    model.save_pretrained(folder)
    del model
    release()


def weight_bytes(folder: Path) -> int:
    """Bytes on disk of what a user ships from a saved folder: its files (weights and their configs)."""
    from bench.models.footprint import directory_bytes

    return directory_bytes(folder)


def timed_loads(load: Callable[[], Any], *, repeats: int, device: torch.device) -> tuple[Any, float]:
    """Load `repeats` times and keep the last model: (model, median seconds until it is ready on the device).
    The first load also warms the page cache, as a server restarting on the same disk would find it."""
    import torch

    seconds, model = [], None
    for _ in range(repeats):
        model = None  # the previous copy goes before the next loads: never two on the device
        release()
        started = time.perf_counter()
        model = load()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - started)
    return model, statistics.median(seconds)


def release() -> None:
    """Free what the last form held before the next one loads."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
