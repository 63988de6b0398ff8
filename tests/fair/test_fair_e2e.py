"""A whole fair comparison through the real CLI, shrunk: tiny BERT, 2 techniques x 2 rates, then 2 seeds each."""

from __future__ import annotations

import re
from pathlib import Path

from support import TINY, finished_runs, run_cli_here

from bench.run.fair_select import TuneResult, choose_rates

COMPARISON = ["experiment=fair-minilm", *TINY, "fair.techniques=[full,lora]",
              "fair.grid={full:[1e-4,1e-3],lora:[1e-3,1e-2]}", "fair.seeds=[1,2]"]


def test_both_stages_run_and_every_run_is_tagged(store: str, tmp_path: Path, capfd) -> None:
    result = run_cli_here(*COMPARISON, f"tracker.uri={store}", cwd=tmp_path)
    stages = capfd.readouterr().out  # the stage sweeps' processes write to this process's stdout
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for line in ("stage 1/2: cell 1/4:", "stage 1/2: cell 4/4:", "stage 2/2: cell 1/4:", "stage 2/2: cell 4/4:"):
        assert line in stages, stages[-3000:]
    report = re.search(r"done: report at (\S+)", result.stdout)
    assert report and (tmp_path / report.group(1)).is_file()

    runs = finished_runs(store, "fair-minilm")
    parents = runs[runs["tags.sweep_role"] == "parent"]
    cells = runs[runs["tags.sweep_role"] != "parent"]
    assert len(parents) == 2 and set(parents["status"]) == {"FINISHED"}  # one sweep per stage
    assert set(cells["status"]) == {"FINISHED"} and cells["tags.fair/id"].nunique() == 1
    tune, final = (cells[cells["tags.fair/stage"] == stage] for stage in ("tune", "final"))
    assert len(tune) + len(final) == len(cells) == 8
    assert sorted(zip(tune["tags.technique"], tune["params.trainer.lr"].astype(float), strict=True)) == [
        ("full", 1e-4), ("full", 1e-3), ("lora", 1e-3), ("lora", 1e-2)]
    assert set(tune["params.seed"]) == {"0"}

    chosen = choose_rates(TuneResult(t, float(lr), score) for t, lr, score in
                          zip(tune["tags.technique"], tune["params.trainer.lr"], tune["metrics.eval/accuracy"],
                              strict=True))
    assert sorted(zip(final["tags.technique"], final["params.seed"], strict=True)) == [
        ("full", "1"), ("full", "2"), ("lora", "1"), ("lora", "2")]
    for _, run in final.iterrows():
        assert float(run["tags.fair/lr_chosen"]) == float(run["params.trainer.lr"]) == chosen[run["tags.technique"]]
        assert run["tags.fair/chosen_on"] == "validation"
    assert tune["tags.fair/lr_chosen"].isna().all()
