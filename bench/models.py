"""Load the tokenizer and base model: a packaged model, a hub id, a local folder or a tiny random one."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from bench.config import ConfigError, ModelConfig
from bench.paths import package_file


def resolve_location(spec: ModelConfig) -> str:
    """The folder or hub id `from_pretrained` should read; checks local folders before anything loads."""
    if spec.path:
        return _checked_folder(spec.path, key="model.path")
    if spec.source == "package":
        return _checked_folder(str(package_file(spec.package or "", key="model.package")), key="model.package")
    if spec.source == "gguf":  # converted once into a cached folder (~20 s the first time)
        from bench.causal.gguf import converted_folder

        return converted_folder(spec)
    if spec.source == "hub":
        return spec.hub_id or ""
    if spec.source == "tiny":
        return f"tiny:{spec.name}"
    raise ConfigError(f"model={spec.name} needs model.path=<folder with config.json and weights>")


def _hub_options(spec: ModelConfig) -> dict[str, Any]:
    """What every `from_pretrained` call gets: the pinned revision, the remote-code switch, the token."""
    return {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code, "token": spec.token}


def _checked_folder(path: str, *, key: str) -> str:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{key}={path!r} does not exist or is not a folder")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{key}={path!r} has no config.json; point it at a saved transformers model folder")
    return str(folder)


def load_tokenizer(spec: ModelConfig, location: str) -> Any:
    """The model's tokenizer; a tiny model borrows the tokenizer named in `model.tokenizer`."""
    from transformers import AutoTokenizer

    if location.startswith("tiny:"):
        location = str(package_file(spec.tokenizer or "", key="model.tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(location, **_hub_options(spec))
    if tokenizer.pad_token is None:  # decoder-only tokenizers often have none; padding needs one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def materialize_tiny(spec: ModelConfig, *, tokenizer: Any, labels: list[str], seed: int) -> str:
    """Build the random-init model once per (architecture, labels, seed) and save it, so that it loads
    through the same `from_pretrained` path as a real model (which quantization needs)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    recipe = {"architecture": spec.architecture, "labels": labels, "seed": seed, "vocab": len(tokenizer)}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench")) / "tiny" / digest
    if (cache / "config.json").is_file():
        return str(cache)
    sizes = {k: v for k, v in spec.architecture.items() if k != "model_type"}
    config = AutoConfig.for_model(spec.architecture["model_type"], vocab_size=len(tokenizer),
                                  pad_token_id=tokenizer.pad_token_id, **_label_maps(labels), **sizes)
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(cache)
    return str(cache)


def _label_maps(labels: list[str]) -> dict[str, Any]:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)}}


def model_limits(location: str, spec: ModelConfig) -> tuple[str, int | None]:
    """The architecture name and its longest supported input, read from config.json alone."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(location, **_hub_options(spec))
    return config.model_type, getattr(config, "max_position_embeddings", None)


def head_module_names(location: str, spec: ModelConfig, labels: list[str]) -> list[str]:
    """Top-level modules outside the pretrained body (the classification head), found on the meta device
    so nothing is allocated: they must stay unquantized and train in full."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(location, **_hub_options(spec),
                                        **_label_maps(labels))
    with init_empty_weights():
        skeleton = AutoModelForSequenceClassification.from_config(config)
    return skeleton_heads(skeleton)


def skeleton_heads(model: Any) -> list[str]:
    """Top-level modules of a (skeleton) model outside its pretrained body that hold parameters: the head."""
    body = model.base_model_prefix
    return [name for name, child in model.named_children() if name != body and any(True for _ in child.parameters())]


def load_classifier(*, location: str, spec: ModelConfig, labels: list[str], dtype: Any, device: Any,
                    quantization: Any = None) -> Any:
    """`AutoModelForSequenceClassification` with our label set; the head is new if the checkpoint has none."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" notice is expected: we train the head
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            location, **_hub_options(spec), dtype=dtype,
            device_map={"": str(device)},  # load straight onto the device; 4-bit models cannot be moved later
            quantization_config=quantization, ignore_mismatched_sizes=True,
            **_label_maps(labels))
    finally:
        hf_logging.set_verbosity(verbosity)


def load_causal_lm(*, location: str, spec: ModelConfig, dtype: Any, device: Any, quantization: Any = None) -> Any:
    """`AutoModelForCausalLM` with the checkpoint's own LM head (nothing is newly initialised)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(location, **_hub_options(spec), dtype=dtype,
                                                device_map={"": str(device)}, quantization_config=quantization)
