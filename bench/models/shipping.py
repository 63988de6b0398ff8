"""What a run ships: the trained adapter (PiSSA's and OLoRA's converted into a plain LoRA delta on the original
base) or the full fine-tuned weights, saved under the run's output folder."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from bench.tracking.tracker import Tracker

INITIAL_ADAPTER = "initial_adapter"  # PiSSA/OLoRA's adapter as initialised, for the conversion when shipped


def save_initial_adapter(model: torch.nn.Module, output_dir: Path) -> None:
    """PiSSA and OLoRA change the base weights; keeping the adapter as initialised lets `ship` convert the
    trained one into a plain LoRA delta that works on the original, unchanged base (peft's conversion)."""
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True  # saved as an ordinary adapter: loading it must not run the SVD again
    model.save_pretrained(output_dir / INITIAL_ADAPTER)
    config.init_lora_weights = init


def ship(model: torch.nn.Module, *, output_dir: Path, uses_adapter: bool, tracker: Tracker, upload: bool) -> int:
    """Save what a user would ship (the adapter, or the full weights) and return its bytes on disk."""
    from bench.models.footprint import directory_bytes

    folder = output_dir / ("adapter" if uses_adapter else "model")
    initial = output_dir / INITIAL_ADAPTER
    with warnings.catch_warnings():
        # PiSSA/OLoRA: saved as a plain LoRA delta of rank 2r against the original weights. peft loads the initial
        # adapter beside the trained one for that and then warns that the two should be converted: they are.
        warnings.filterwarnings("ignore", message=r"(PiSSA|OLoRA) changes the base weights")
        model.save_pretrained(folder, **({"path_initial_model_for_weight_conversion": str(initial)}
                                         if initial.is_dir() else {}))
    if initial.is_dir():
        _restore_modules_to_save(model, folder)
    if upload:
        tracker.log_artifacts(folder, folder.name)
    return directory_bytes(folder)


def _restore_modules_to_save(model: torch.nn.Module, folder: Path) -> int:
    """peft's conversion (`LoraModel.subtract_mutated_init`, peft 0.21) keeps only the lora_A/lora_B tensors, so a
    converted adapter loses the modules trained in full beside it (a classifier's head): loaded, it would serve
    an untrained head. Put them back into the saved file; returns how many tensors were missing."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    saved = load_file(path)
    trained = get_peft_model_state_dict(model)
    missing = {name: tensor.detach().cpu().contiguous() for name, tensor in trained.items()
               if "lora_" not in name and name not in saved}
    if missing:
        save_file({**saved, **missing}, path, metadata={"format": "pt"})
    return len(missing)
