"""Sweeps: one parent per sweep, resumable cells, failures recorded as data, full FT never run twice.

Hydra's default launcher calls the cells one after another in the process that launched them, and each cell
then runs in a fresh process of its own (tests/sweeps/test_isolation.py); these sweeps go through
`bench.cli.main` in the test process (`run_cli_here`), saving the launching interpreter's imports per sweep.
tests/sweeps/test_launchers.py calls cells from worker processes."""

from __future__ import annotations

import pytest
from support import TINY, finished_runs, run_cli_here

from bench.cli import group_choices

SMALL = [*TINY, "tracker.log_model=false"]


def _sweep(*overrides: str, store: str, tmp_path, env=None):
    return run_cli_here("-m", *SMALL, *overrides, f"tracker.uri={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                        cwd=tmp_path, env=env)


def _children(store: str):
    runs = finished_runs(store)
    parents = runs[runs["tags.sweep_role"] == "parent"]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    return parents, children


def test_one_parent_two_children_and_a_rerun_adds_nothing(store: str, tmp_path) -> None:
    first = _sweep("method=lora", "method.r=2,4", store=store, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "cell 1/2" in first.stdout and "cell 2/2" in first.stdout
    assert f"report: {(tmp_path / 'sweep' / 'report' / 'index.html').resolve()} (in the MLflow UI: " in first.stdout
    parents, children = _children(store)
    assert len(parents) == 1 and len(children) == 2
    assert set(children["tags.mlflow.parentRunId"]) == {parents.iloc[0]["run_id"]}
    assert set(children["status"]) == {"FINISHED"}
    assert sorted(children["params.method.r"]) == ["2", "4"]
    assert {"method.r=2,4", "method=lora"} <= set(parents.iloc[0]["tags.sweep_overrides"].split())

    again = _sweep("method=lora", "method.r=2,4", store=store, tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped: already FINISHED") == 2
    parents, children = _children(store)
    assert len(parents) == 1 and len(children) == 2  # same parent, no new child

    forced = _sweep("method=lora", "method.r=2,4", "force=true", store=store, tmp_path=tmp_path)
    assert forced.returncode == 0, forced.stderr[-3000:]
    parents, children = _children(store)
    assert len(parents) == 1 and len(children) == 4  # same sweep, same parent; both cells ran again


def test_a_bad_cell_is_recorded_and_the_sweep_goes_on(store: str, tmp_path) -> None:
    result = _sweep("method=lora", "method.r=8,-1", store=store, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 finished, 1 failed" in result.stdout
    children = _children(store)[1].set_index("params.method.r")
    assert children.loc["8", "status"] == "FINISHED"
    assert children.loc["-1", "status"] == "FAILED"
    assert children.loc["-1", "tags.failure"] == "config"
    assert "method.r=-1" in children.loc["-1", "tags.error"]


def test_all_cells_failing_exits_non_zero_and_says_how_many(store: str, tmp_path) -> None:
    result = _sweep("method=lora", "method.r=-1,-2", store=store, tmp_path=tmp_path)
    assert result.returncode == 1
    assert "all 2 cells of the sweep failed" in result.stderr
    assert set(_children(store)[1]["tags.failure"]) == {"config"}


def test_full_fine_tuning_collapses_rank_and_target_sweeps(store: str, tmp_path) -> None:
    result = _sweep("method=full,lora", "method.r=2,4", store=store, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    children = _children(store)[1]
    assert (children["tags.technique"] == "full").sum() == 1
    assert (children["tags.technique"] == "lora").sum() == 2
    assert "params.method.r" in children and children.loc[children["tags.technique"] == "full",
                                                           "params.method.r"].isna().all()


# How many cells each preset runs; a new preset needs its line here, so none ships uncomposed.
PRESET_CELLS = {
    "sweep": {"techniques": 3, "ranks": 5, "targets": 3, "models": 3, "seeds": 3, "paper": 135, "variants": 8},
    # None: a fair comparison, whose cells are those of the stage sweeps it starts (tests/fair composes them)
    "experiment": {"quick": 1, "smollm2-quick": 3, "techniques-minilm": 9, "variants-minilm": 24, "fair-minilm": None,
                   "profile-minilm": 4, "peft-metamath": 10},
}


@pytest.mark.parametrize(("group", "preset"), [(group, preset) for group in PRESET_CELLS
                                               for preset in group_choices(group)
                                               if PRESET_CELLS[group].get(preset, 0) is not None])
def test_every_preset_composes_into_valid_configs(group: str, preset: str, tmp_path) -> None:
    """Every `sweep=` and `experiment=` preset composes, has the cells it promises, and every value it sweeps
    builds a valid typed config (a preset naming a missing model or a bad value fails here, not at run time)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from bench.cli import compose
    from bench.config import RunConfig
    from bench.run.sweep import count_cells, sweep_overrides

    base = [f"{group}={preset}", f"output_dir={tmp_path}"]
    config = compose(base, return_hydra_config=True)
    swept = sweep_overrides(config)
    assert count_cells(swept) == PRESET_CELLS[group][preset]
    multirun = config.hydra.mode is not None and config.hydra.mode.name == "MULTIRUN"
    assert multirun == (PRESET_CELLS[group][preset] > 1)  # a grid preset launches its sweep by itself
    cells = [[]] + [[f"{o.key_or_group}={value}"] for o in OverridesParser.create().parse_overrides(swept)
                    if o.is_sweep_override() for value in o.sweep_string_iterator()]
    for cell in cells:
        composed = compose([*base, *cell])
        RunConfig.from_dict(OmegaConf.to_container(composed, resolve=True))  # raises ConfigError if invalid
