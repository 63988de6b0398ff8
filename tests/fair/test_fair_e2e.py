"""A whole fair comparison through the real CLI, shrunk: tiny BERT, 2 techniques x 2 rates, one round of 2 finer
rates each, then 2 seeds each, then each chosen configuration re-timed alone."""

from __future__ import annotations

import re
from pathlib import Path

from support import TINY, finished_runs, run_cli_here

from bench.run.fair_select import TuneResult, choose_rates

COMPARISON = ["experiment=fair-minilm", *TINY, "fair.techniques=[full,lora]",
              "fair.grid={full:[1e-4,1e-3],lora:[1e-3,1e-2]}", "fair.seeds=[1,2]", "fair.refine_rounds=1"]


def test_both_stages_run_and_every_run_is_tagged(store: str, tmp_path: Path, capfd) -> None:
    result = run_cli_here(*COMPARISON, f"tracker.uri={store}", cwd=tmp_path)
    stages = capfd.readouterr().out  # the stage sweeps' processes write to this process's stdout
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for line in ("stage 1/3: cell 1/4:", "stage 1/3: cell 4/4:", "stage 1/3 round 1: cell 4/4:",
                 "stage 2/3: cell 1/4:", "stage 2/3: cell 4/4:", "stage 3/3: cell 2/2:"):
        assert line in stages, stages[-3000:]
    report = re.search(r"done: report at (\S+)", result.stdout)
    assert report and (tmp_path / report.group(1)).is_file()

    runs = finished_runs(store, "fair-minilm")
    parents = runs[runs["tags.sweep_role"] == "parent"]
    cells = runs[runs["tags.sweep_role"] != "parent"]
    assert len(parents) == 4 and set(parents["status"]) == {"FINISHED"}  # the grid, one round, final, retime
    assert set(cells["status"]) == {"FINISHED"} and cells["tags.fair/id"].nunique() == 1
    tune, final, retime = (cells[cells["tags.fair/stage"] == stage] for stage in ("tune", "final", "retime"))
    assert len(tune) + len(final) + len(retime) == len(cells) == 14
    grid = tune[tune["tags.fair/round"].isna()]
    assert sorted(zip(grid["tags.technique"], grid["params.trainer.lr"].astype(float), strict=True)) == [
        ("full", 1e-4), ("full", 1e-3), ("lora", 1e-3), ("lora", 1e-2)]
    assert set(tune["params.seed"]) == {"0"} and set(tune["tags.fair/round"].dropna()) == {"1"}
    assert len(tune) == 8  # each technique's two rates, and its two finer ones

    results = [TuneResult(t, float(lr), score) for t, lr, score in
               zip(tune["tags.technique"], tune["params.trainer.lr"], tune["metrics.eval/accuracy"], strict=True)]
    chosen = choose_rates(results)
    assert sorted(zip(final["tags.technique"], final["params.seed"], strict=True)) == [
        ("full", "1"), ("full", "2"), ("lora", "1"), ("lora", "2")]
    for _, run in final.iterrows():
        assert float(run["tags.fair/lr_chosen"]) == float(run["params.trainer.lr"]) == chosen[run["tags.technique"]]
        assert run["tags.fair/chosen_on"] == "validation" and run["tags.fair/rate_settled"] in ("true", "false")
    assert tune["tags.fair/lr_chosen"].isna().all()
    # re-timed alone: each chosen configuration once, the first seed, with no other cell beside it
    assert sorted(zip(retime["tags.technique"], retime["params.seed"], strict=True)) == [("full", "1"), ("lora", "1")]
    assert set(retime["tags.timing/shared"]) == {"false"}
    for _, run in retime.iterrows():
        assert float(run["params.trainer.lr"]) == chosen[run["tags.technique"]]
        twin = final[(final["tags.technique"] == run["tags.technique"]) & (final["params.seed"] == "1")].iloc[0]
        assert twin["tags.config_hash"] == run["tags.config_hash"]  # the same configuration, timed again
    assert set(cells["tags.timing/shared"]) <= {"true", "false"}  # every cell says whether it was timed alone
