"""Where a model comes from and how it loads: its location (a folder, a hub id, a tiny random model), its
config, tokenizer and context limit, and the weights as a classifier or a causal LM."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bench.config import ConfigError, ModelConfig
from bench.core.paths import cache_root, package_file, save_whole

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ModelLocation:
    """What `from_pretrained` reads: a local folder or a hub id. A tiny random model has no weights until
    `materialize_tiny` saves it into a folder, so its location says so instead of naming one."""

    kind: Literal["folder", "hub", "tiny", "config"]
    value: str  # the folder, the hub id, or the config name of a tiny model or of a config-only one

    @property
    def is_tiny(self) -> bool:
        return self.kind == "tiny"

    @property
    def has_weights(self) -> bool:
        """A config-only model (`source: config`) exists for `bench plan`: there is nothing to train."""
        return self.kind != "config"

    @property
    def source(self) -> str:
        """The folder or hub id for `from_pretrained`; a tiny model must be materialized first."""
        if self.kind in ("tiny", "config"):
            raise ValueError(f"model {self.value!r} has no weights ({self.kind}): nothing to load")
        return self.value

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}" if self.kind in ("tiny", "config") else self.value


def resolve_location(spec: ModelConfig) -> ModelLocation:
    """Where the model is; checks local folders before anything loads."""
    if spec.path:
        return ModelLocation("folder", _checked_folder(spec.path, key="model.path"))
    if spec.source == "package":
        folder = str(package_file(spec.package or "", key="model.package"))
        return ModelLocation("folder", _checked_folder(folder, key="model.package"))
    if spec.source == "gguf":  # converted once into a cached folder (~20 s the first time)
        from bench.models.gguf import converted_folder

        return ModelLocation("folder", converted_folder(spec))
    if spec.source == "hub":
        return ModelLocation("hub", spec.hub_id or "")
    if spec.source in ("tiny", "config"):
        return ModelLocation(spec.source, spec.name)
    raise ConfigError(f"model={spec.name} needs model.path=<folder with config.json and weights>")


def hub_options(spec: ModelConfig) -> dict[str, Any]:
    """What every `from_pretrained` call gets: the pinned revision, the remote-code switch, the token."""
    return {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code, "token": spec.token}


def _checked_folder(path: str, *, key: str) -> str:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{key}={path!r} does not exist or is not a folder")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{key}={path!r} has no config.json; point it at a saved transformers model folder")
    return str(folder)


def load_tokenizer(spec: ModelConfig, location: ModelLocation) -> Any:
    """The model's tokenizer; a tiny model borrows the tokenizer named in `model.tokenizer`."""
    from transformers import AutoTokenizer

    source = str(package_file(spec.tokenizer or "", key="model.tokenizer")) if location.is_tiny else location.source
    tokenizer = AutoTokenizer.from_pretrained(source, **hub_options(spec))
    if tokenizer.pad_token is None:  # decoder-only tokenizers often have none; padding needs one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def end_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token that ends an answer: EOS, or SEP for a BERT vocabulary (which has no EOS)."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def _tiny_config(spec: ModelConfig, *, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> Any:
    """The config of a tiny random model: its architecture, the tokenizer's vocabulary, and a classifier's
    labels (`labels`) or a causal LM's special tokens (`labels=None`)."""
    from transformers import AutoConfig

    sizes = {k: v for k, v in spec.architecture.items() if k != "model_type"}
    head = (label_maps(labels) if labels is not None else
            {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": end_token_id(tokenizer)})
    return AutoConfig.for_model(spec.architecture["model_type"], vocab_size=len(tokenizer),
                                pad_token_id=tokenizer.pad_token_id, **head, **sizes)


def materialize_tiny(spec: ModelConfig, *, tokenizer: PreTrainedTokenizerBase, seed: int,
                     labels: list[str] | None) -> ModelLocation:
    """Build the random-init model once per (architecture, head, vocabulary, seed) and save it, so that it
    loads through the same `from_pretrained` path as a real model (which quantization needs). `labels`: a
    classifier's label set; None builds a causal LM."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    recipe = {"architecture": spec.architecture, "labels": labels, "seed": seed, "vocab": len(tokenizer),
              "pad": tokenizer.pad_token_id, "end": end_token_id(tokenizer)}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_root() / "tiny" / digest
    if not (folder / "config.json").is_file():
        config = _tiny_config(spec, tokenizer=tokenizer, labels=labels)
        torch.manual_seed(seed)
        auto = AutoModelForCausalLM if labels is None else AutoModelForSequenceClassification
        save_whole(auto.from_config(config).save_pretrained, folder)
    return ModelLocation("folder", str(folder))


def label_maps(labels: list[str]) -> dict[str, Any]:
    """A classifier config's label fields."""
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)}}


def model_config(spec: ModelConfig, location: ModelLocation, labels: list[str] | None = None) -> Any:
    """The transformers config alone (no weights): from the folder or hub id, or built for a tiny model.
    `labels` sizes a classifier's head."""
    from transformers import AutoConfig

    if location.is_tiny:
        return _tiny_config(spec, tokenizer=load_tokenizer(spec, location), labels=labels)
    if location.kind == "config":  # the config.json numbers a model config ships (`conf/model/llama-3.1-8b.yaml`)
        sizes = {k: v for k, v in spec.architecture.items() if k != "model_type"}
        return AutoConfig.for_model(spec.architecture["model_type"], **sizes,
                                    **(label_maps(labels) if labels is not None else {}))
    return AutoConfig.from_pretrained(location.source, **hub_options(spec),
                                      **(label_maps(labels) if labels is not None else {}))


def model_limits(location: ModelLocation, spec: ModelConfig) -> tuple[str, int | None]:
    """The architecture name and its longest supported input, read from config.json alone."""
    config = model_config(spec, location)
    return config.model_type, getattr(config, "max_position_embeddings", None)


def check_context(max_length: int, *, model_limit: int | None, tokenizer: PreTrainedTokenizerBase,
                  model_name: str) -> None:
    """`data.max_length` must fit the model's context (position embeddings) and its tokenizer's limit."""
    limits = [n for n in (model_limit, getattr(tokenizer, "model_max_length", None)) if n and n < 1_000_000]
    if limits and max_length > min(limits):
        raise ConfigError(f"data.max_length={max_length} exceeds model={model_name}'s context of {min(limits)} "
                          "tokens, the limit of its position embeddings and tokenizer; lower data.max_length")


def head_module_names(location: ModelLocation, spec: ModelConfig, labels: list[str]) -> list[str]:
    """Top-level modules outside the pretrained body (the classification head), found on the meta device
    so nothing is allocated: they must stay unquantized and train in full."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForSequenceClassification

    with init_empty_weights():
        skeleton = AutoModelForSequenceClassification.from_config(model_config(spec, location, labels))
    return skeleton_heads(skeleton)


def skeleton_heads(model: torch.nn.Module) -> list[str]:
    """Top-level modules of a (skeleton) model outside its pretrained body that hold parameters: the head."""
    body = model.base_model_prefix
    return [name for name, child in model.named_children() if name != body and any(True for _ in child.parameters())]


def load_classifier(*, location: ModelLocation, spec: ModelConfig, labels: list[str], dtype: torch.dtype,
                    device: torch.device,
                    quantization: BitsAndBytesConfig | None = None, new_head: bool = True) -> Any:
    """`AutoModelForSequenceClassification` with our label set; the head is new if the checkpoint has none.
    `new_head=False` (a folder bench saved, head included) refuses any weight whose shape does not match."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" notice is expected: we train the head
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            location.source, **hub_options(spec), dtype=dtype,
            device_map={"": str(device)},  # load straight onto the device; 4-bit models cannot be moved later
            ignore_mismatched_sizes=new_head, **_quantized(quantization), **label_maps(labels))
    finally:
        hf_logging.set_verbosity(verbosity)


def load_causal_lm(*, location: ModelLocation, spec: ModelConfig, dtype: torch.dtype, device: torch.device,
                   quantization: BitsAndBytesConfig | None = None) -> Any:
    """`AutoModelForCausalLM` with the checkpoint's own LM head (nothing is newly initialised)."""
    from transformers import AutoModelForCausalLM

    attention = {"attn_implementation": spec.attn_implementation} if spec.attn_implementation else {}
    return AutoModelForCausalLM.from_pretrained(location.source, **hub_options(spec), dtype=dtype,
                                                device_map={"": str(device)}, **_quantized(quantization), **attention)


def _quantized(quantization: Any) -> dict[str, Any]:
    """`quantization_config` only when there is one: an explicit None would override the config.json of a model
    saved in 4 bits, and transformers would then load its packed weights as mismatched shapes."""
    return {} if quantization is None else {"quantization_config": quantization}
