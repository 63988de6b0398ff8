"""`benchmarks/fit_boundary.py`, the boundary check of scripts/cuda_check.sh, on this CPU with the cap faked: the plan's
largest batch for a budget finishes under it and a batch 25 % larger passes it (the allocator's own measured peak
decides, as torch's cap would on a GPU). The CUDA cap itself is set in each run's process before `bench run`
starts: checked here with torch's setter recorded instead of called."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from support import TINY

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("fit_boundary", ROOT / "benchmarks" / "fit_boundary.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_cap_is_the_budgets_share_of_the_device() -> None:
    boundary = _script()
    assert boundary.cap_fraction(20 * 2 ** 30, 80 * 2 ** 30) == 0.25
    with pytest.raises(ValueError, match="does not fit a device"):
        boundary.cap_fraction(100 * 2 ** 30, 80 * 2 ** 30)


def test_each_run_caps_its_own_allocator_before_bench_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import bench.cli

    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda *args: calls.append(("cap", args)))
    monkeypatch.setattr(bench.cli, "main", lambda: calls.append(("bench", list(sys.argv[1:]))) or 0)
    monkeypatch.setattr(sys, "argv", ["-c", "0.25", "run", "method=lora"])
    with pytest.raises(SystemExit) as done:
        exec(_script().BOOT, {"__name__": "__main__"})  # noqa: S102 - the code each run's process starts with
    assert done.value.code == 0
    assert calls == [("cap", (0.25, 0)), ("bench", ["run", "method=lora"])]  # the cap first, then the run


def test_the_plans_largest_batch_fits_and_a_quarter_more_does_not(tmp_path: Path, capsys) -> None:
    """LoRA on the tiny BERT with a 16 MiB budget, 10 % of it kept free: the plan's largest batch, then 25 % more,
    each a real run (the budget leaves the batch's share of the memory large enough for 25 % more rows to pass
    the headroom)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [o for o in TINY if not o.startswith(("trainer.batch_size", "trainer.max_steps", "data.max_train"))]
    code = _script().main(["--store", store, "--budget-mib", "16", "--device", "cpu", "--methods", "lora",
                           *overrides])
    out = capsys.readouterr().out
    assert code == 0, out
    line = next(line for line in out.splitlines() if line.startswith("lora: "))
    assert "[ok]" in line and "failure=oom (faked: allocator peak" in line and "rows of 32 tokens" in line
    assert out.splitlines()[-1] == "fit boundary at 16 MiB on cpu (headroom 10%): 1 of 1 as planned"
