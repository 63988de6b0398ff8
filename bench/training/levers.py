"""The memory levers of `trainer`: gradient checkpointing, the optimizer's state format, gradient accumulation.

Each changes what training holds, never what it computes (up to rounding): checkpointing recomputes each
layer's activations in backward instead of keeping them; 8-bit AdamW keeps its two moments in blockwise
quantized bytes (a quarter of fp32's) and the paged variants keep them in CUDA unified memory, which the driver
pages out to the host under pressure (the QLoRA paper's third component); accumulation sums the gradients of
several small batches before one optimizer step, so memory follows the micro-batch and the update the sum.

Cheap checks come first (`check_trainer_supported`, before anything loads); the rest is applied by the
training loop (`bench.training.loop`): `enable_gradient_checkpointing`, `optimizer_class`, `micro_batch_groups`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from bench.config import ConfigError, TrainerConfig

if TYPE_CHECKING:
    import torch

# trainer.optimizer -> the bitsandbytes class; `adamw` is torch-optimi's AdamW (bench.training.loop.build_optimizer)
BNB_OPTIMIZERS = {"adamw_8bit": "AdamW8bit", "paged_adamw_8bit": "PagedAdamW8bit",
                  "paged_adamw_32bit": "PagedAdamW32bit"}
_CPU_CHOICES = "adamw or adamw_8bit"


def check_trainer_supported(trainer: TrainerConfig, device: torch.device) -> None:
    """Cheap checks before any data or weights load: the optimizer's library, and the device it needs.
    Importing bitsandbytes here also keeps its import out of the run's measured window."""
    name = trainer.optimizer
    if name not in BNB_OPTIMIZERS:
        return
    key = f"trainer.optimizer={name}"
    try:
        import bitsandbytes  # noqa: F401 - only whether it imports
    except ImportError:
        raise ConfigError(f"{key} needs bitsandbytes; install it with `pip install bitsandbytes` "
                          "or choose trainer.optimizer=adamw") from None
    if name.startswith("paged_") and device.type != "cuda":
        # bitsandbytes would fall back to ordinary buffers on the CPU with a warning: the run would be
        # labelled paged without being so
        raise ConfigError(f"{key} needs CUDA (paged memory lives in CUDA unified memory); on {device.type} "
                          f"choose {_CPU_CHOICES}")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key} is not supported on device {device.type!r}; bitsandbytes runs on cpu or cuda")
    if device.type == "cpu" and not _cpu_kernel_works(BNB_OPTIMIZERS[name]):
        raise ConfigError(f"{key} has no CPU kernel in this bitsandbytes; on cpu choose trainer.optimizer=adamw")


@functools.cache
def _cpu_kernel_works(class_name: str) -> bool:
    """One step of the optimizer on a weight just large enough for 8-bit state: whether this bitsandbytes
    has the CPU kernel (0.50 has; older releases had CUDA only)."""
    import bitsandbytes as bnb
    import torch

    weight = torch.nn.Parameter(torch.ones(4096))  # bitsandbytes keeps smaller tensors' state in fp32
    weight.grad = torch.ones_like(weight)
    try:
        getattr(bnb.optim, class_name)([weight], lr=1e-3).step()
    except Exception:  # whatever a missing kernel raises in this release: the optimizer cannot run here
        return False
    return True


def optimizer_class(name: str) -> Any:
    """The optimizer class `trainer.optimizer` names; each takes (groups, lr, betas, eps, weight_decay)."""
    if name == "adamw":
        import optimi

        return optimi.AdamW
    import bitsandbytes as bnb

    return getattr(bnb.optim, BNB_OPTIMIZERS[name])


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """transformers' own activation checkpointing, non-reentrant (a peft model forwards the call to its base;
    a causal LM already runs with use_cache=False). A model without it is a config error, one line."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        raise ConfigError(f"trainer.gradient_checkpointing=true is not supported by {type(base).__name__}; "
                          "set trainer.gradient_checkpointing=false")
    options = {"use_reentrant": False}  # the reentrant form needs inputs that require grad and skips kwargs
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5: the old name warns it is deprecated
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def apply_levers(model: torch.nn.Module, trainer: TrainerConfig) -> None:
    """What the trainer's choices change on the model itself, before training starts."""
    if trainer.gradient_checkpointing:
        enable_gradient_checkpointing(model)


def micro_batch_groups(loader: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """The loader's batches in groups of `size` (the last group of an epoch may be smaller), one group per
    optimizer step. The batches are still on the host, so a group costs no device memory."""
    group: list[Any] = []
    for batch in loader:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def optimizer_steps_per_epoch(batches: int, size: int) -> int:
    """Optimizer steps in an epoch of `batches` micro-batches: a leftover partial group makes one more."""
    return -(-batches // size)
