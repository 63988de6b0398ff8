"""bench starting a distributed run itself: `bench run trainer.strategy=ddp trainer.nproc=2 ...` hands the run to
torchrun (`python -m torch.distributed.run --standalone`), whose N processes each run `bench.run.rank_worker`,
and reads back how it ended.

torchrun is the engine for the hard parts: it picks a free port for the ranks to meet, and when one rank fails it
stops the others (SIGTERM, then SIGKILL). Each worker's entry point is wrapped in torch's `record`, so a rank's
exception lands in its error file, and torchrun's failure report (`bench.distributed.agent` keeps it) holds every
failed rank: its error, or the signal that killed it, and when. The first failure is the one that ended the run;
the other ranks then fail on a broken connection, as late as the same second, so within a second such
consequences come last. The MLflow run, which rank 0 opened and announced, is closed FAILED with
`rank <r>: <error>`, whatever state rank 0 left it in (KILLED by torchrun's SIGTERM, FAILED on the broken
connection, or RUNNING when it was killed outright).
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

WORKER_MODULE, AGENT_MODULE = "bench.run.rank_worker", "bench.distributed.agent"
# what a rank says when another one failed first: a consequence, not the cause
CONSEQUENCES = ("Connection closed by peer", "Connection reset by peer", "DistBackendError", "communicator was aborted",
                "SIGTERM")
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
        """The run's `failure` tag, as `bench.tracking.tracker.failure_kind` names a single process's error."""
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
    command = [sys.executable, "-m", AGENT_MODULE, str(folder / "failures.json"), "--standalone",
               f"--nproc_per_node={nproc}", f"--log-dir={folder / 'logs'}", "-m", WORKER_MODULE, str(spec)]
    returncode = _run(command, env={**os.environ, RUN_FILE_ENV: str(folder / "run_id")}, folder=folder,
                      cfg=cfg, subject=subject)
    if returncode == 0 and (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    failure = first_failure(folder / "failures.json") or Failure(-1, f"torchrun exited with status {returncode} "
                                                                      "without a failure report")
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


def first_failure(report: Path) -> Failure | None:
    """The rank whose failure came first in torchrun's report (`bench.distributed.agent`); None without one. Its
    timestamps have whole seconds: within one, a broken connection comes after any other failure, then the order
    in which the error files were written (a rank killed by a signal wrote none, and comes first)."""
    if not report.is_file():
        return None
    failures = json.loads(report.read_text())
    if not failures:
        return None
    first = min(failures, key=lambda f: (f["timestamp"], any(c in f["message"] for c in CONSEQUENCES),
                                         f["error_file_mtime"]))
    return Failure(int(first["rank"]), first["message"])


def _announced(folder: Path) -> str:
    path = folder / "run_id"
    return path.read_text().strip() if path.is_file() else ""


def close_run(cfg: RunConfig, run_id: str, *, status: str, failure: str, error: str, subject: str,
              only_if_running: bool = False) -> None:
    """End rank 0's MLflow run with `status`, `failure` and `error` tags and a note saying how it ended."""
    import mlflow
    from mlflow.entities import RunTag

    from bench.tracking.store import retrying
    from bench.tracking.tracker import tracking_uri
    from bench.tracking.ui_meta import NOTE, failed_note

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
