"""The fault suite's ledger: every injected fault and what the store recorded, summed up at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LEDGER: list[dict[str, object]] = []


@pytest.fixture
def ledger():
    """`ledger(fault, expected_runs, recorded_runs)` after each injected fault."""

    def record(fault: str, expected: int, recorded: int) -> None:
        LEDGER.append({"fault": fault, "expected_runs": expected, "recorded_runs": recorded,
                       "lost_runs": max(expected - recorded, 0)})

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if not LEDGER:
        return
    faults = len(LEDGER)
    recorded = sum(int(row["recorded_runs"]) for row in LEDGER)
    lost = sum(int(row["lost_runs"]) for row in LEDGER)
    line = f"fault suite: {faults} faults injected, {recorded} runs recorded, {lost} runs lost"
    terminalreporter.write_line(line)
    out = Path(__file__).resolve().parents[2] / "reports" / "reliability"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "fault_suite.json").write_text(json.dumps({"summary": line, "faults": LEDGER}, indent=2))
    except OSError:  # a read-only checkout still gets the summary line
        pass
