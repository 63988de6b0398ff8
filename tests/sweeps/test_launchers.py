"""Parallel cells with the joblib launcher lose and duplicate nothing; cluster launchers compose."""

from __future__ import annotations

import importlib.util

import pytest
from support import TINY, finished_runs, run_cli


def test_four_parallel_cells_all_recorded_once(store: str, tmp_path) -> None:
    result = run_cli("-m", *TINY, "tracker.log_model=false", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
                     "seed=1,2,3,4", f"tracker.uri={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(store)
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert sorted(children["params.seed"]) == ["1", "2", "3", "4"]  # none lost, none twice
    assert set(children["status"]) == {"FINISHED"}
    assert children["tags.config_hash"].is_unique


@pytest.mark.parametrize(("launcher", "target"), [
    ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ("ray_cluster", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"),
])
def test_cluster_launcher_configs_compose(launcher: str, target: str) -> None:
    from bench.cli import compose

    if launcher == "slurm" and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed (pip install 'bench[cluster]')")
    config = compose(["sweep=techniques", f"hydra/launcher={launcher}"], return_hydra_config=True)
    launcher_config = config.hydra.launcher
    assert launcher_config._target_ == target
    if launcher == "slurm":
        assert launcher_config.gpus_per_node == 1 and launcher_config.array_parallelism == 16
    else:
        assert launcher_config.ray.init.address == "auto" and launcher_config.ray.remote.num_gpus == 1
