"""Device and dtype choices, made once per run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.config import ConfigError, MethodConfig, Precision

if TYPE_CHECKING:
    import torch


def pick_device(requested: str) -> Any:
    """`auto` means the GPU when there is one; asking for CUDA without one is a config error."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={requested!r} but no CUDA device is visible; use trainer.device=cpu")
    return torch.device(requested)


@dataclass(frozen=True)
class PlannedDevice:
    """A device a plan targets but this machine may not have (a GPU to rent): its type and whether it computes
    in bf16 natively, so the dtypes resolve as a run on it would resolve them."""

    type: str  # "cuda" or "cpu"
    bf16: bool = True  # every card bench plan names (Ampere and newer) has native bf16
    index: int | None = None

    def __str__(self) -> str:
        return self.type


def bf16_supported(device: torch.device) -> bool:
    """Native bf16 arithmetic: Ampere+ on CUDA, AVX512-BF16 or AMX on CPU (else bf16 is slow emulation)."""
    import torch

    if isinstance(device, PlannedDevice):
        return device.bf16
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so absent on some versions
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def pick_dtype(requested: Precision, device: torch.device) -> Any:
    """The 16-bit dtype to use: bf16 where native, else fp16 on CUDA, else fp32 (CPU fp16 is not usable)."""
    import torch

    explicit = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise ConfigError("method.dtype=fp16 is not supported for training on CPU; choose auto, bf16 or fp32")
        return explicit[requested]
    if bf16_supported(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.float32


def run_dtypes(method: MethodConfig, device: torch.device) -> tuple[Any, Any]:
    """(dtype the unquantized weights are held in, dtype matmuls compute in) for a technique on a device: the
    weights' dtype for 16-bit bases, `method.compute_dtype` for both on a 4-bit base (its frozen float weights
    are held in the compute dtype, as LoRA holds them in its own)."""
    if method.technique.quantized:
        compute = pick_dtype(method.compute_dtype, device)
        return compute, compute
    weights = pick_dtype(method.dtype, device)
    return weights, weights


def hardware_identity(method: MethodConfig, device: torch.device) -> dict[str, str]:
    """What the config hash adds about where and how a run computes: the device type (and on CUDA the GPU's
    name) and the resolved dtypes. A GPU sweep into a store of CPU runs then reruns its cells instead of
    skipping them as finished, and bf16 and fp32 runs of the same config stay apart."""
    import torch

    weights, compute = run_dtypes(method, device)
    identity = {"device": device.type, "weights_dtype": dtype_name(weights), "compute_dtype": dtype_name(compute)}
    if device.type == "cuda":
        identity["accelerator"] = torch.cuda.get_device_name(device)
    return identity


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `bf16`, for params and tags."""
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}.get(str(dtype), str(dtype))
