"""The fair comparison's orchestration, with its stage sweeps replaced by runs written straight into a store: what
each stage is asked to run, what the choice carries over, what a failed technique and an interrupt do."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import bench.run.fair as fair
from bench.cli import fair_comparison
from bench.config import ConfigError, RunConfig

# validation accuracy per technique and index into its grid; full fine-tuning's tuning cells all fail
ACCURACY = {"lora": [0.50, 0.62, 0.62], "dora": [0.58, 0.55, 0.40]}
TECHNIQUES = "fair.techniques=[full,lora,dora]"
GRID = "fair.grid={full:[1.5e-5,5e-5,1.5e-4],lora:[6e-4,2e-3,6e-3],dora:[6e-4,2e-3,6e-3]}"
ROWS = 500  # validation rows: what the noise of an accuracy depends on


def curves(technique: str, lr: float) -> float | None:
    """A validation accuracy against the rate, peaked in log-rate: LoRA broad around 3.5e-3, DoRA sharp around
    1e-2 (refine: rates below are for `REFINE_GRID`)."""
    peak, width = {"lora": (3.5e-3, 0.25), "dora": (1e-2, 2.0)}.get(technique, (None, None))
    if peak is None:
        return None
    return max(0.3, (0.66 if technique == "lora" else 0.70) - width * math.log10(lr / peak) ** 2)


REFINE_GRID = "fair.grid={lora:[6e-4,2e-3,6e-3],dora:[2e-3,6e-3,2e-2]}"


def parsed(overrides: list[str]) -> dict:
    """The overrides' values as Hydra reads them: a sweep as its list of values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values = {}
    for override in OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")]):
        values[override.key_or_group] = (list(override.sweep_iterator()) if override.is_sweep_override()
                                         else override.value())
    return values


class FakeStages:
    """Stands in for `bench run -m ...`: records the overrides and logs the runs a tuning stage would have, with the
    validation accuracy `accuracy(technique, lr)` (None: the cell failed) on ROWS rows."""

    def __init__(self, uri: str, composed: dict, status: int = 0, accuracy=None) -> None:
        self.uri, self.composed, self.status, self.calls = uri, composed, status, []
        self.accuracy = accuracy or self.grid_accuracy

    def grid_accuracy(self, technique: str, lr: float) -> float | None:
        rates = self.composed["fair"]["grid"][technique]  # a finer rate off the grid: a failed cell
        return ACCURACY[technique][rates.index(lr)] if technique in ACCURACY and lr in rates else None

    def __call__(self, overrides: list[str], stage: str) -> int:
        import mlflow

        self.calls.append((stage, overrides))
        values = parsed(overrides)
        client = mlflow.MlflowClient(self.uri)
        experiment = self.composed["tracker"]["experiment"]
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        if stage != fair.TUNE:
            return self.status
        methods = values["method"] if isinstance(values["method"], list) else [values["method"]]
        for technique in methods:
            grid = self.composed["fair"]["grid"][technique]
            rates = values["fair.refine"][technique] if "fair.round" in values else grid
            for lr in (rates[int(index)] for index in values["fair.rate"]):
                run = client.create_run(experiment_id, tags={"technique": technique, "fair/id": values["fair.id"],
                                                             "fair/stage": stage}).info.run_id
                client.log_param(run, "trainer.lr", lr)
                accuracy = self.accuracy(technique, lr)
                if accuracy is not None:
                    client.log_metric(run, "eval/accuracy", accuracy)
                    client.log_metric(run, "data/eval_rows", ROWS)
                client.set_terminated(run, "FINISHED" if accuracy is not None else "FAILED")
        return self.status


def _start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str, status: int = 0,
           accuracy=None) -> tuple[int, FakeStages]:
    overrides = ["experiment=fair-minilm", TECHNIQUES, GRID, f"tracker.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                 "fair.report=false", *extra]
    composed = fair_comparison(overrides)
    stages = FakeStages(composed["tracker"]["uri"], composed, status, accuracy)
    monkeypatch.setattr(fair, "_run_stage", stages)
    return fair.run_fair(overrides, composed), stages


def test_the_best_validation_rate_of_each_technique_goes_on_to_the_seeds(tmp_path, monkeypatch, capsys) -> None:
    status, stages = _start(tmp_path, monkeypatch, "fair.refine_rounds=0")
    assert status == 0
    (first, tune), (second, final), (third, retime) = stages.calls
    assert (first, second, third) == (fair.TUNE, fair.FINAL, fair.RETIME)
    assert "method=full,lora,dora" in tune and "fair.rate=0,1,2" in tune and "seed=0" in tune and "-m" in tune
    # full fine-tuning failed every tuning cell: it is left out, and said so; LoRA's tie goes to the smaller rate
    assert "method=lora,dora" in final and "seed=1,2,3" in final
    assert "fair.chosen={lora:0.002,dora:0.0006}" in final
    assert "fair.resolution={lora:3.33}" in final and "fair.settled={lora:false,dora:false}" in final
    # the re-timing stage: the same configurations, the first seed, one cell at a time
    assert retime[retime.index("fair.stage=retime") + 1:] == [
        "method=lora,dora", "fair.chosen={lora:0.002,dora:0.0006}", "fair.resolution={lora:3.33}",
        "fair.settled={lora:false,dora:false}", "seed=1", "hydra.launcher.n_jobs=1", "-m"]
    ids = {o for o in tune + final + retime if o.startswith("fair.id=")}
    assert len(ids) == 1  # one comparison, one id on every stage
    assert all(parsed([o])["fair.id"] == o.split("=", 1)[1].strip("'") for o in ids)  # a string, whatever it looks like
    out, err = capsys.readouterr()
    assert "no finished tuning run for full: left out of stage 2/3" in err
    assert "dora's best rate, 0.0006, is the smallest it tried" in err and "lora's best" not in err
    lines = out.splitlines()
    table = lines.index("stage 1/3 done: validation accuracy (eval/accuracy) by rate, * = chosen")
    assert lines[table + 1:table + 4] == [
        "  full  no finished run",
        "  lora  lr 0.0006: 0.5000  lr 0.002: 0.6200 *  lr 0.006: 0.6200 | resolution 3.33x, not settled: a neighbour "
        "differs by more than noise",
        "  dora  lr 0.0006: 0.5800 *  lr 0.002: 0.5500  lr 0.006: 0.4000 | resolution unknown: the best is the end "
        "of the rates tried"]
    assert any(line.startswith("stage 3/3 (retime): bench run ") for line in lines)


def test_finer_rounds_refine_every_technique_once_then_only_the_unsettled_up_to_the_cap(tmp_path, monkeypatch,
                                                                                     capsys) -> None:
    """LoRA's broad peak is settled after one round; DoRA's sharp one is not, and gets the second, the last."""
    status, stages = _start(tmp_path, monkeypatch, "fair.techniques=[lora,dora]", REFINE_GRID, accuracy=curves)
    assert status == 0
    assert [stage for stage, _ in stages.calls] == [fair.TUNE] * 3 + [fair.FINAL, fair.RETIME]
    (_, grid), (_, first), (_, second) = stages.calls[:3]
    assert "fair.round=1" in first and "method=lora,dora" in first and "fair.rate=0,1" in first
    assert "fair.refine={lora:[0.00346,0.018],dora:[0.00346,0.011]}" in first  # lora's best was 6e-3, its grid's end
    assert "fair.round=2" in second and "method=dora" in second and "fair.refine={dora:[0.00812,0.0148]}" in second
    assert all("seed=0" in call for call in (grid, first, second))
    final = stages.calls[3][1]
    assert "fair.chosen={lora:0.00346,dora:0.011}" in final
    assert "fair.resolution={lora:1.73,dora:1.35}" in final and "fair.settled={lora:true,dora:false}" in final
    out = capsys.readouterr().out
    assert "stage 1/3 round 1 (tune): bench run" in out and "stage 1/3 round 2 (tune): bench run" in out
    (tmp_path / "capped").mkdir()
    _, capped = _start(tmp_path / "capped", monkeypatch, "fair.techniques=[lora,dora]", REFINE_GRID,
                       "fair.refine_rounds=1", accuracy=curves)
    assert [stage for stage, _ in capped.calls] == [fair.TUNE] * 2 + [fair.FINAL, fair.RETIME]


def test_the_same_command_is_the_same_comparison_and_another_is_not(tmp_path, monkeypatch, capsys) -> None:
    ids, warned = [], []
    for extra in ([], ["tracker.log_model=true", "monitor.interval_s=0.5"], ["data.max_train_samples=100"]):
        _, stages = _start(tmp_path, monkeypatch, *extra)
        ids.append(next(o for o in stages.calls[0][1] if o.startswith("fair.id=")))
        warned.append("already holds runs of another fair comparison" in capsys.readouterr().err)
    assert ids[0] == ids[1] != ids[2]
    assert warned == [False, False, True]  # the report of the experiment would mix the two comparisons


def test_a_dry_run_comparison_is_refused(tmp_path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="bench plan"):
        _start(tmp_path, monkeypatch, "dry_run=true")


@pytest.mark.parametrize("status", [2, 130])
def test_a_stage_that_stops_stops_the_comparison(tmp_path, monkeypatch, status: int) -> None:
    result, stages = _start(tmp_path, monkeypatch, status=status)
    assert result == status and len(stages.calls) == 1


def test_no_technique_tuned_means_no_final_stage(tmp_path, monkeypatch) -> None:
    status, stages = _start(tmp_path, monkeypatch, "fair.techniques=[full]")
    assert status == 1 and len(stages.calls) == 1


@pytest.mark.parametrize(("override", "needle"), [
    ("method=lora", "fair.techniques"), ("seed=3", "fair.seeds"), ("trainer.lr=1e-3", "fair.grid"),
    ("method.r=4,8", "sweeps techniques, rates and seeds itself"), ("fair.chosen={lora:0.1}", "set by the fair"),
    ("fair.refine={lora:[0.1,0.2]}", "set by the fair"), ("fair.resolution={lora:2}", "set by the fair"),
])
def test_overrides_that_would_undo_the_comparison_are_refused(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        fair.check_overrides(["experiment=fair-minilm", override])


@pytest.mark.parametrize(("values", "needle"), [
    ({"techniques": []}, "empty"), ({"techniques": ["nope"]}, "not a technique"),
    ({"techniques": ["lora", "dora"], "grid": {"lora": [1e-3]}}, "no learning rates for 'dora'"),
    ({"techniques": ["lora", "dora"], "grid": {"lora": [1e-3], "dora": [1e-3, 2e-3]}}, "same number"),
    ({"techniques": ["lora"], "grid": {"lora": [0.0]}}, "> 0"), ({"seeds": []}, "seeds is empty"),
    ({"stage": "later"}, "fair.stage"), ({"bogus": 1}, "fair.bogus"),
    ({"refine_rounds": 6}, r"fair.refine_rounds=6 is not valid; it must be in \[0, 5\]"),
    ({"refine_rounds": -1}, "fair.refine_rounds"), ({"round": 0}, "fair.round=0"),
])
def test_bad_fair_sections_are_named(values: dict, needle: str) -> None:
    raw = {"techniques": ["lora"], "grid": {"lora": [1e-3]}, **values}
    with pytest.raises(ConfigError, match=needle):
        fair.FairConfig.from_dict(raw)


def _cell(*overrides: str) -> dict:
    """A stage cell's config as Hydra hands it to the job."""
    from omegaconf import OmegaConf, open_dict

    from bench.cli import compose

    cfg = compose(["experiment=fair-minilm", "fair.id=abc", *overrides])
    with open_dict(cfg):
        del cfg["output_dir"]
    return OmegaConf.to_container(cfg, resolve=True)


def test_a_cell_gets_its_rate_and_tags_and_a_plain_run_config() -> None:
    raw, prefix = fair.prepare_cell(_cell("fair.stage=tune", "method=full", "fair.rate=2", "fair.grid.full=[1,2,3]"))
    assert prefix == "stage 1/3: " and raw["trainer"]["lr"] == 3.0
    assert raw["tracker"]["tags"] == {"fair/id": "abc", "fair/stage": "tune"}
    raw, prefix = fair.prepare_cell(_cell("fair.stage=tune", "method=lora", "fair.rate=1", "fair.round=2",
                                          "fair.refine={lora:[0.001,0.003]}"))
    assert prefix == "stage 1/3 round 2: " and raw["trainer"]["lr"] == 0.003
    assert raw["tracker"]["tags"] == {"fair/id": "abc", "fair/stage": "tune", "fair/round": 2}
    raw, prefix = fair.prepare_cell(_cell("fair.stage=final", "method=lora", "fair.chosen={lora:0.006}"))
    assert prefix == "stage 2/3: " and raw["trainer"]["lr"] == 0.006
    assert raw["tracker"]["tags"] == {"fair/id": "abc", "fair/stage": "final", "fair/lr_chosen": 0.006,
                                      "fair/chosen_on": "validation"}
    assert RunConfig.from_dict(raw).tracker.tags["fair/stage"] == "final"  # no `fair` key left to reject
    raw, prefix = fair.prepare_cell(_cell("fair.stage=retime", "method=lora", "fair.chosen={lora:0.006}",
                                          "fair.resolution={lora:1.73}", "fair.settled={lora:true}"))
    assert prefix == "stage 3/3: " and raw["trainer"]["lr"] == 0.006
    assert raw["tracker"]["tags"] == {"fair/id": "abc", "fair/stage": "retime", "fair/lr_chosen": 0.006,
                                      "fair/chosen_on": "validation", "fair/rate_resolution": 1.73,
                                      "fair/rate_settled": "true"}
    _, prefix = fair.prepare_cell(_cell("fair.stage=final", "method=lora", "fair.chosen={lora:0.006}",
                                        "fair.retime=false"))
    assert prefix == "stage 2/2: "


def test_only_an_experiment_with_a_fair_section_is_orchestrated() -> None:
    assert fair_comparison(["method=lora"]) is None
    assert fair_comparison(["experiment=quick"]) is None
    assert fair_comparison(["experiment=fair-minilm", "fair.stage=tune", "fair.id=x"]) is None  # a stage's own run
    assert fair_comparison(["experiment=fair-minilm", "--cfg", "job"]) is None  # Hydra prints the config instead
    assert fair_comparison(["-m", "experiment=fair-minilm"])["fair"]["techniques"][0] == "full"


def test_an_interrupted_stage_leaves_no_run_running(tmp_path, monkeypatch) -> None:
    """joblib's shutdown kills an interrupted stage's cells with SIGKILL before they close their runs: the
    comparison closes them KILLED on its way out."""
    import socket

    import mlflow

    overrides = ["experiment=fair-minilm", TECHNIQUES, GRID, f"tracker.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    composed = fair_comparison(overrides)
    client = mlflow.MlflowClient(composed["tracker"]["uri"])

    def interrupted(overrides: list[str], stage: str) -> int:
        experiment_id = client.create_experiment(composed["tracker"]["experiment"])
        # a cell killed mid-run: its process (this PID, but not started at time 0) is gone
        tags = {"process/host": socket.gethostname(), "process/pid": "1", "process/started": "0"}
        client.create_run(experiment_id, tags=tags)
        raise KeyboardInterrupt

    monkeypatch.setattr(fair, "_run_stage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fair.run_fair(overrides, composed)
    experiment_id = client.get_experiment_by_name(composed["tracker"]["experiment"]).experiment_id
    (run,) = client.search_runs([experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["failure"] == "killed"
