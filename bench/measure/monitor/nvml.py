"""Which NVML device is this process's CUDA device.

CUDA and NVML number GPUs differently: CUDA counts only the devices in CUDA_VISIBLE_DEVICES, in
"fastest first" order unless CUDA_DEVICE_ORDER=PCI_BUS_ID; NVML sees every GPU in PCI order. So the
CUDA device is identified by what does not depend on numbering: its PCI address, else its UUID (both from
torch's device properties), else the CUDA_VISIBLE_DEVICES entry it came from (an index, or a full or
abbreviated `GPU-`/`MIG-` UUID). The matching is pure and tested on CPU; only `open_handle` needs NVML.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DeviceIdentity:
    """What identifies a GPU whatever the numbering: (domain, bus, device) on the PCI bus, and the UUID."""

    pci: tuple[int, int, int] | None = None
    uuid: str | None = None  # NVML form: `GPU-xxxxxxxx-...`


def visible_entry(cuda_index: int, visible: str | None) -> str | None:
    """The CUDA_VISIBLE_DEVICES entry that CUDA index `cuda_index` stands for (None when the variable is unset)."""
    if visible is None:
        return None
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    return entries[cuda_index] if 0 <= cuda_index < len(entries) else None


def match_nvml_index(target: DeviceIdentity, candidates: list[DeviceIdentity], *, cuda_index: int,
                     visible: str | None, pci_order: bool) -> tuple[int | None, str]:
    """The NVML index of the device, and how it was found (or why not): pci, uuid, visible_uuid, visible_index."""
    if target.pci is not None:
        found = [i for i, c in enumerate(candidates) if c.pci == target.pci]
        if len(found) == 1:
            return found[0], "pci"
    if target.uuid:
        found = [i for i, c in enumerate(candidates) if c.uuid and c.uuid.lower() == target.uuid.lower()]
        if len(found) == 1:
            return found[0], "uuid"
    entry = visible_entry(cuda_index, visible)
    if entry and entry.startswith(("GPU-", "MIG-")):  # NVML and CUDA accept unique UUID prefixes
        found = [i for i, c in enumerate(candidates) if c.uuid and c.uuid.lower().startswith(entry.lower())]
        return (found[0], "visible_uuid") if len(found) == 1 else (None, f"no unique NVML device for {entry}")
    if not pci_order:  # an index then means "n-th fastest", which NVML cannot tell
        return None, "no PCI id or UUID from torch, and CUDA_DEVICE_ORDER is not PCI_BUS_ID"
    index = int(entry) if entry is not None and entry.isdigit() else cuda_index if visible is None else None
    if index is None or not 0 <= index < len(candidates):
        return None, f"CUDA device {cuda_index} not found in CUDA_VISIBLE_DEVICES={visible!r}"
    return index, "visible_index"


def torch_identity(device: torch.device) -> DeviceIdentity:
    """PCI address and UUID of a CUDA device from torch (attributes missing on older torch are skipped)."""
    import torch

    props = torch.cuda.get_device_properties(device)
    parts = [getattr(props, name, None) for name in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    pci = tuple(int(p) for p in parts) if all(p is not None for p in parts) else None
    uuid = getattr(props, "uuid", None)
    return DeviceIdentity(pci=pci, uuid=f"GPU-{uuid}" if uuid is not None else None)  # type: ignore[arg-type]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_identities(pynvml: Any) -> list[DeviceIdentity]:
    """Identity of every GPU NVML sees, in NVML order."""
    identities = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pci = pynvml.nvmlDeviceGetPciInfo(handle)
        identities.append(DeviceIdentity(pci=(int(pci.domain), int(pci.bus), int(pci.device)),
                                         uuid=_text(pynvml.nvmlDeviceGetUUID(handle))))
    return identities


def open_handle(device: torch.device) -> tuple[Any, Any, str]:
    """`(pynvml, handle, how)` for the CUDA device; raises (an NVMLError, ImportError, LookupError) on failure."""
    import pynvml

    pynvml.nvmlInit()
    cuda_index = device.index if device.index is not None else _current_index()
    index, how = match_nvml_index(torch_identity(device), nvml_identities(pynvml), cuda_index=cuda_index,
                                  visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
                                  pci_order=os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID")
    if index is None:
        pynvml.nvmlShutdown()
        raise LookupError(how)
    return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index), how


def _current_index() -> int:
    import torch

    return torch.cuda.current_device()
