"""The fault suite's ledger: every injected fault and what the store recorded, summed up at the end. The
summary line is printed; the ledger is written as JSON only where $BENCH_FAULT_LEDGER names a file (`nox -s
reliability` writes reports/reliability/fault_suite.json), so the test suite never rewrites a tracked file."""

from __future__ import annotations

import json
import os
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
    target = os.environ.get("BENCH_FAULT_LEDGER")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps({"summary": line, "faults": LEDGER}, indent=2) + "\n")
        terminalreporter.write_line(f"fault suite ledger: {target}")
