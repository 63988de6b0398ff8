"""Where a result came from: code version, package versions and hardware, logged as tags on every run."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("bench", "torch", "transformers", "peft", "bitsandbytes", "datasets", "evaluate", "hydra-core",
            "mlflow", "pandas", "torch-optimi", "nvidia-ml-py")


def git_sha() -> str:
    """The commit of the working directory (or of the package's checkout), `+dirty` if it has changes."""
    for folder in (Path.cwd(), Path(__file__).resolve().parent):
        try:
            sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                 timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        return f"{sha}+dirty" if dirty else sha
    return "unknown"


def package_versions() -> dict[str, str]:
    """`version/<package>` tags for the packages that decide the result."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[f"version/{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[f"version/{name}"] = "not installed"
    versions["version/python"] = platform.python_version()
    return versions


def hardware(device: object) -> dict[str, str]:
    """`hw/*` tags: CPU model and cores, RAM, and the GPU when one is used."""
    import psutil
    import torch

    tags = {"hw/cpu": _cpu_model(), "hw/cpu_cores": str(os.cpu_count()),
            "hw/torch_threads": str(torch.get_num_threads()), "hw/ram_bytes": str(psutil.virtual_memory().total),
            "hw/device": str(device)}
    if getattr(device, "type", "") == "cuda":
        props = torch.cuda.get_device_properties(device)
        tags.update({"hw/gpu": props.name, "hw/gpu_memory_bytes": str(props.total_memory),
                     "hw/cuda": str(torch.version.cuda)})
    return tags


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
