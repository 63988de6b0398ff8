"""One rank of a run bench launched: `torchrun ... -m bench.run.rank_worker <spec.json>` (`bench.distributed.
launch` writes the spec). Each rank runs the same `bench.run.runner.run_experiment`; the environment torchrun set
makes it a rank (no second launch, its own device, rank 0 alone on MLflow). Rank 0 writes the run's metrics to
the spec's result file; an exception on any rank goes to torchrun's error file through torch's `record`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    """Run this rank's part of the run the spec at `argv[0]` describes."""
    if os.environ.get("RANK", "0") != "0":  # one progress bar per run, rank 0's; tqdm reads it when imported
        os.environ["TQDM_DISABLE"] = "1"
    from torch.distributed.elastic.multiprocessing.errors import record

    # torchrun stops the other ranks with SIGTERM when one fails: unwind, so rank 0 closes its run
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return record(_run)(Path(argv[0]))


def _run(spec_path: Path) -> int:
    from bench.config import RunConfig
    from bench.distributed.context import leave, rank_info
    from bench.distributed.launch import worker_spec
    from bench.run.runner import run_experiment

    spec = worker_spec(spec_path)
    try:
        metrics = run_experiment(RunConfig.from_dict(spec["config"]), parent_run_id=spec["parent_run_id"],
                                 start_metrics=spec["start_metrics"])
    finally:
        leave()
    if rank_info().is_main:
        written = Path(f"{spec['result']}.tmp")
        written.write_text(json.dumps(metrics))  # NaN stays NaN: Python's json writes and reads it
        written.replace(spec["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
