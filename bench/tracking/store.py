"""The MLflow store as a shared, fallible resource: reachability, retries, stale runs, and secrets.

- A tracking URI that cannot be reached is a config error found in a second, not after the model loads.
- Several processes writing one SQLite file (parallel sweep cells) can meet "database is locked"; such
  calls are retried with backoff. Several creating a new file at once would each run MLflow's schema
  migrations and leave it half-migrated, so the first contact with a SQLite store holds a file lock. The lock
  file lives in the system's temporary folder, never beside the store in the user's folder (`store_lock`).
- Writers starting together (on a SQLite file or through one `mlflow server`) upsert the same rows: the
  experiment's kind tag, a dataset. MLflow's upsert reads, then inserts, so all but one may fail on the
  table's unique key; the retry finds the row and updates it (see `_TRANSIENT`).
- A process killed with SIGKILL cannot close its run. Every run carries its host and PID, and the next
  run started on that host closes runs whose process is gone as KILLED, so none stays RUNNING.
- Nothing that looks like a secret reaches params or tags.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench.config import ConfigError

T = TypeVar("T")
# What a retry clears, as the store words it. "database is locked" and friends: SQLite contention.
# "already exists": two writers creating the same experiment or tables. "unique constraint failed":
# two writers upserting one key (MLflow's set_experiment_tag, set_tag and log_inputs read, then insert): the
# loser gets, through a server, `RestException: BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed:
# experiment_tags.key, experiment_tags.experiment_id`, and its retry finds the row and updates it. (HTTP 5xx and
# dropped connections are retried by MLflow's own HTTP client, for minutes, before bench sees them.)
_TRANSIENT = ("database is locked", "already exists", "unable to open database", "disk i/o error",
              "unique constraint failed")
# A name is secret when it ends in one of these words (`token`, `hf_token`, `api_key`, `AWS_SECRET_ACCESS_KEY`),
# not when it merely contains one (`tokenizer`, `num_key_value_heads`).
_SECRET_WORDS = r"token|key|secret|password|passwd|credentials?"
_SECRET_KEY = re.compile(rf"(?:^|_)(?:{_SECRET_WORDS})$", re.IGNORECASE)
REDACTED = "***"


def resolve_uri(explicit: str | None) -> str:
    """The one fallback every command uses: the given URI, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_reachable(uri: str) -> None:
    """Fail fast, with the URI in the message, when the store cannot be reached or written."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                return
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ConfigError(f"tracker.uri={redact_uri(uri)!r} cannot be reached ({reason}); start the "
                              "server, or drop tracker.uri to use the local ./mlflow.db") from None
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"tracker.uri={uri!r}: folder {str(folder)!r} does not exist or is not writable")


def open_store(uri: str, experiment: str) -> Any:
    """Connect to the store and get (or create) the experiment; one process at a time for a SQLite file,
    so that only one of them creates and migrates its schema. Writers that all find the experiment missing all
    create it: one wins, and `mlflow.set_experiment` reads it back for the others (RESOURCE_ALREADY_EXISTS)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    if not uri.startswith("sqlite:///"):
        return retrying(lambda: mlflow.set_experiment(experiment))
    with store_lock(Path(uri.removeprefix("sqlite:///"))):
        return retrying(lambda: mlflow.set_experiment(experiment))


def store_lock(database: Path, *, timeout: float = 300) -> Any:
    """The lock every process on this host takes before its first contact with the SQLite file `database`. Its
    file is in the temporary folder, named by a digest of the store's absolute path: a lock file beside the store
    would stay in the user's folder after every run (flock's file cannot be removed safely on release: a process
    waiting on it would then lock a file nobody else sees). SQLite's own locking covers one host as well."""
    from filelock import FileLock

    digest = hashlib.sha256(str(database.expanduser().resolve()).encode()).hexdigest()[:20]
    folder = Path(tempfile.gettempdir()) / f"bench-locks-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return FileLock(folder / f"store-{digest}.lock", timeout=timeout)


def retrying(call: Callable[[], T], *, attempts: int = 8) -> T:
    """Run a store call, retrying transient contention (`_TRANSIENT`) with jittered exponential backoff; any
    other error is raised at once."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - MLflow wraps SQLAlchemy errors in its own types
            if attempt == attempts - 1 or not any(s in str(error).lower() for s in _TRANSIENT):
                raise
            time.sleep(min(0.1 * 2**attempt, 3.0) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def process_tags() -> dict[str, str]:
    """Who owns the run: lets a later run on the same host close it if this process dies unannounced."""
    import psutil

    return {"process/host": socket.gethostname(), "process/pid": str(os.getpid()),
            "process/started": str(psutil.Process().create_time())}


def close_stale_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark RUNNING runs of this host whose process is gone as KILLED; returns their ids."""

    query = f"attributes.status = 'RUNNING' and tags.`process/host` = '{socket.gethostname()}'"
    closed = []
    for run in client.search_runs([experiment_id], query, max_results=1000):
        pid, started = run.data.tags.get("process/pid"), run.data.tags.get("process/started")
        if pid is None or _alive(int(pid), started):
            continue
        client.set_tag(run.info.run_id, "failure", "killed")
        client.set_tag(run.info.run_id, "error", f"process {pid} ended without closing the run (SIGKILL or crash)")
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


def _alive(pid: int, started: str | None) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    # The PID may have been reused by a newer process since the run began.
    return started is None or abs(process.create_time() - float(started)) < 1.0


def redact(values: dict[str, Any]) -> dict[str, Any]:
    """Secret-looking keys get `***`; every other string value goes through `redact_text`."""
    clean = {}
    for key, value in values.items():
        if _SECRET_KEY.search(key.rsplit(".", 1)[-1]) and value not in (None, ""):
            clean[key] = REDACTED
        else:
            clean[key] = redact_text(value) if isinstance(value, str) else value
    return clean


def redact_text(text: str) -> str:
    """Cut secrets out of free text: URI passwords, `...token=value` overrides, secret env values."""
    text = redact_uri(text)
    text = re.sub(rf"(\S*?(?<![a-z0-9])(?:{_SECRET_WORDS})=)\S+", rf"\1{REDACTED}", text,
                  flags=re.IGNORECASE)
    for name, secret in os.environ.items():
        if _SECRET_KEY.search(name) and len(secret) >= 6 and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_uri(uri: str) -> str:
    """`http://user:pass@host` -> `http://user:***@host`."""
    return re.sub(r"(://[^/:@\s]+):[^@/\s]+@", rf"\1:{REDACTED}@", uri)
