"""bench starting a distributed run itself: `bench run trainer.strategy=ddp trainer.nproc=2 ...` hands the run to
torchrun (`python -m torch.distributed.run --standalone`), whose N processes each run `bench.distributed.worker`,
and reads back how it ended.

torchrun is the engine for the hard parts: it picks a free port for the ranks to meet, and when one rank fails it
stops the others (SIGTERM, then SIGKILL). Each worker's entry point is wrapped in torch's `record`, so a rank's
exception lands in its error file (`<log-dir>/<id>/attempt_0/<rank>/error.json`), which torchrun also prints as
the "root cause". This process reads those files: the first failure by time is the one that ended the run (the
other ranks then fail on a closed connection, a second or more later), and the MLflow run, which rank 0 opened and
announced, is closed FAILED with `rank <r>: <error>`, whatever state rank 0 left it in (KILLED by torchrun's
SIGTERM, or RUNNING when it was killed outright).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.config import RunConfig
from bench.distributed.ranks import RUN_FILE_ENV

WORKER_MODULE = "bench.distributed.worker"
STOP_GRACE_S = 120  # how long an interrupted run may take to close before torchrun is killed


class RankFailed(RuntimeError):
    """A rank of a distributed run failed; the message names it."""


@dataclass(frozen=True)
class Failure:
    """The first rank that failed, and its error (`Type: message`), from torchrun's error files."""

    rank: int
    error: str

    @property
    def kind(self) -> str:
        """The run's `failure` tag, as `bench.tracking.failure_kind` names a single process's error."""
        name = self.error.partition(":")[0]
        if name == "NonFiniteLoss":
            return "nan"
        if name == "ConfigError":
            return "config"
        if name == "OutOfMemoryError" or "out of memory" in self.error.lower():
            return "oom"
        return "error"


def launch(cfg: RunConfig, *, nproc: int, output_dir: Path, subject: str, parent_run_id: str | None,
           start_metrics: dict[str, float] | None) -> dict[str, float]:
    """Run `cfg` as `nproc` processes through torchrun; rank 0's metrics, or RankFailed naming the rank."""
    folder = Path(tempfile.mkdtemp(prefix="torchrun-", dir=output_dir))  # the spec, error files, run id, result
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"config": asdict(cfg), "parent_run_id": parent_run_id,
                                "start_metrics": start_metrics or {}, "result": str(folder / "result.json")}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               f"--log-dir={folder / 'logs'}", "-m", WORKER_MODULE, str(spec)]
    returncode = _run(command, env={**os.environ, RUN_FILE_ENV: str(folder / "run_id")}, folder=folder,
                      cfg=cfg, subject=subject)
    if returncode == 0 and (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    failure = first_failure(folder / "logs") or Failure(-1, f"torchrun exited with status {returncode} and no rank "
                                                            "left an error report (killed by a signal?)")
    where = f"rank {failure.rank}" if failure.rank >= 0 else "a rank"
    error = RankFailed(f"{where}: {failure.error}")
    run_id = _announced(folder)
    if run_id:
        close_run(cfg, run_id, status="FAILED", failure=failure.kind, error=str(error), subject=subject)
        error.bench_run_id = run_id  # type: ignore[attr-defined]  # on record: a sweep records no second run
    raise error


def _run(command: list[str], *, env: dict[str, str], folder: Path, cfg: RunConfig, subject: str) -> int:
    """torchrun to its end. Ctrl-C or SIGTERM here: torchrun gets SIGTERM and stops its workers (rank 0 closes
    its run KILLED; one it could not close is closed here), then the interrupt goes on up."""
    child = subprocess.Popen(command, env=env)
    try:
        return child.wait()
    except KeyboardInterrupt:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        run_id = _announced(folder)
        if run_id:
            close_run(cfg, run_id, status="KILLED", failure="killed", error="interrupted", subject=subject,
                      only_if_running=True)
        raise


def first_failure(log_dir: Path) -> Failure | None:
    """The rank whose error came first, from the error files torch's `record` wrote (one per failed rank, in a
    folder named by its local rank: bench's torchrun runs on one node, so that is its rank). The timestamp in a
    file has whole seconds; the file's own modification time breaks ties."""
    found = []
    for path in log_dir.glob("*/attempt_*/*/error.json"):
        try:
            message = json.loads(path.read_text()).get("message", {})
        except (OSError, ValueError):
            continue
        text = message.get("message", "") if isinstance(message, dict) else str(message)
        stamp = int((message.get("extraInfo", {}) if isinstance(message, dict) else {}).get("timestamp", 0) or 0)
        found.append((stamp, path.stat().st_mtime, int(path.parent.name), text))
    if not found:
        return None
    _, _, rank, text = min(found)
    return Failure(rank, text)


def _announced(folder: Path) -> str:
    path = folder / "run_id"
    return path.read_text().strip() if path.is_file() else ""


def close_run(cfg: RunConfig, run_id: str, *, status: str, failure: str, error: str, subject: str,
              only_if_running: bool = False) -> None:
    """End rank 0's MLflow run with `status`, `failure` and `error` tags and a note saying how it ended."""
    import mlflow
    from mlflow.entities import RunTag

    from bench.store import retrying
    from bench.tracking import tracking_uri
    from bench.ui_meta import NOTE, failed_note

    client = mlflow.MlflowClient(tracking_uri(cfg.tracker))
    if only_if_running and retrying(lambda: client.get_run(run_id)).info.status != "RUNNING":
        return
    ending = "interrupted" if status == "KILLED" else f"failed ({failure})"
    tags = [RunTag("failure", failure), RunTag("error", error[:4000]),
            RunTag(NOTE, failed_note(subject, failure=ending, error=error))]
    retrying(lambda: client.log_batch(run_id, tags=tags))
    retrying(lambda: client.set_terminated(run_id, status))


def worker_spec(path: Path) -> dict[str, Any]:
    """What `launch` wrote for the workers."""
    return json.loads(path.read_text())
