"""The GPUs bench knows (`bench plan --gpu NAME`, the budgets `bench report` recommends for), and how a memory size
such as `24GiB` reads. In `core` so that the plan and the report, siblings that may not import each other, read one
table.

A card's memory is what its maker sells it with. NVIDIA's spec sheets write "GB", but DRAM comes in binary
sizes (an RTX 4090's twelve 16 Gbit GDDR6X chips hold 12 x 2 GiB), so "24 GB" is read as 24 GiB. CUDA reports
a little less than the figure sold (an A100 40GB shows 40,441 MiB to CUDA's deviceQuery): the plan's headroom
(`bench.plan.cards.DEFAULT_HEADROOM`) covers that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB, MIB = 2 ** 30, 2 ** 20


class SizeError(ValueError):
    """A memory size or headroom that cannot be read; the CLI prints it as one line (exit code 2)."""


@dataclass(frozen=True)
class Card:
    """A GPU to plan for: its memory as sold, and how `bench run` names it in the `hw/gpu` tag."""

    name: str  # the --gpu choice
    title: str  # as NVIDIA names it
    memory_bytes: int
    gpu_tag: str  # a regular expression that torch.cuda.get_device_name() of this card matches (the hw/gpu tag)

    def matches(self, gpu_name: str) -> bool:
        """Whether a run's `hw/gpu` tag names this card."""
        return re.search(self.gpu_tag, gpu_name or "") is not None


# Sources: NVIDIA's product pages and datasheets, memory capacity as listed.
CARDS = {card.name: card for card in (
    # https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4090/ (specs: 24 GB GDDR6X)
    Card("rtx4090", "GeForce RTX 4090", 24 * GIB, r"RTX 4090"),
    # https://www.nvidia.com/en-us/data-center/l4/ (specifications: GPU memory 24GB GDDR6); \b keeps L40, L40S out
    Card("l4", "L4", 24 * GIB, r"\bL4\b"),
    # https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
    # (GPU memory: 40GB HBM2 / 80GB HBM2e); CUDA names them "A100-SXM4-40GB", "A100-PCIE-40GB", "A100 80GB PCIe"
    Card("a100-40g", "A100 40GB", 40 * GIB, r"A100.*40GB"),
    Card("a100-80g", "A100 80GB", 80 * GIB, r"A100.*80GB"),
    # https://www.nvidia.com/en-us/data-center/h100/ (specifications: H100 SXM and PCIe 80GB; the NVL's 94GB is
    # another card, left out of the match)
    Card("h100", "H100 80GB", 80 * GIB, r"H100(?!.*NVL)"),
    # https://www.nvidia.com/en-us/data-center/h200/ (specifications: GPU memory 141GB HBM3e)
    Card("h200", "H200", 141 * GIB, r"H200"),
)}

_UNITS = {"gib": GIB, "gb": GIB, "mib": MIB, "mb": MIB}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", re.IGNORECASE)


def card(name: str) -> Card:
    """The card `--gpu NAME` names (case-insensitive)."""
    found = CARDS.get(name.strip().lower())
    if found is None:
        raise SizeError(f"unknown --gpu {name!r}; valid choices: {', '.join(CARDS)}")
    return found


def parse_size(text: str, *, option: str = "--gpu-memory") -> int:
    """Bytes from `24GiB`, `24GB`, `80 GiB`, `512MiB`: GB and MB read as GiB and MiB, as GPU memory is sold."""
    match = _SIZE.fullmatch(text)
    if not match or match.group(2).lower() not in _UNITS or float(match.group(1)) <= 0:
        raise SizeError(f"{option}={text!r} is not a size; write a positive number and GiB, GB, MiB or MB "
                        "(e.g. 24GiB, 80GB, 512MiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
