"""`bench report`: a self-contained HTML comparison of the runs recorded in MLflow.

load (MLflow → pandas) → analyse (pure pandas) → plots (plotly figure dicts) → render (escaped HTML), tied
together by build. It never imports torch, so it runs wherever MLflow and pandas do.
"""

from __future__ import annotations

import shlex


def report_hint(experiment: str | None, sweep_id: str | None) -> str:
    """The command line that writes the report of a sweep or an experiment, e.g. `bench report --sweep 3f2a`."""
    parts = ["bench", "report"]
    if experiment is not None:
        parts += ["--experiment", experiment]
    if sweep_id is not None:
        parts += ["--sweep", sweep_id]
    return shlex.join(parts)
