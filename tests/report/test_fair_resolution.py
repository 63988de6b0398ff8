"""The report says at what resolution each tuned rate was chosen: the larger ratio to a rate tried beside it."""

from __future__ import annotations

import math

import pandas as pd

from bench.report import fair_sections, tuned


def _runs(points: dict[str, dict[float, float]], chosen: dict[str, float]) -> pd.DataFrame:
    """Tidy runs: one finished tuning run per (technique, rate) with its validation accuracy, one final run each."""
    rows = []
    for technique, scores in points.items():
        for lr, accuracy in scores.items():
            rows.append({"technique": technique, "lr": lr, "accuracy": accuracy, "stage": "tune", "lr_chosen": None})
        rows.append({"technique": technique, "lr": chosen[technique], "accuracy": 0.6, "stage": "final",
                     "lr_chosen": chosen[technique]})
    columns = ["technique", "lr", "accuracy", "stage", "lr_chosen"]
    frame = pd.DataFrame(rows, columns=columns).assign(fair_id="cmp", dataset="tweets", model="minilm", device="cpu",
                                                       status="FINISHED", superseded=False)
    return frame.astype({"lr_chosen": float})


def test_each_chosen_rate_gets_the_larger_ratio_to_its_tried_neighbours() -> None:
    runs = _runs({"lora": {6e-4: 0.54, 2e-3: 0.626, 3.46e-3: 0.648, 6e-3: 0.62, 1.1e-3: 0.6},
                  "qalora": {6e-3: 0.5, 2e-2: 0.58, 6e-2: 0.63}},
                 {"lora": 3.46e-3, "qalora": 6e-2})
    found = tuned.resolutions(runs).set_index("technique")["resolution"]
    assert found["lora"] == max(3.46e-3 / 2e-3, 6e-3 / 3.46e-3)
    assert math.isnan(found["qalora"])  # the chosen rate is the largest tried: no bound above it
    line = fair_sections.resolution_line(runs)
    assert "lora 1.73x" in line and "qalora at an end of its rates" in line


def test_no_tuning_run_no_line() -> None:
    runs = _runs({}, {})
    assert tuned.resolutions(runs).empty and fair_sections.resolution_line(runs) == ""
