"""Writers that start together on one store race each other: the errors the losers get, as MLflow words them,
end in success, and any other error still surfaces at once. A fake client stands in for the store, so each race
happens every time rather than now and then."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

import bench.tracking.store
from bench.tracking.store import open_store, retrying
from bench.tracking.ui_meta import EXPERIMENT_KIND, TRAINING_KIND, mark_training_experiment

# The errors as MLflow 3.17 raised them here. Through `mlflow server` (SQLite behind it), to the writer that lost
# the race to insert the experiment's kind, and to the one that lost the race to create the experiment:
DUPLICATE_TAG = {"error_code": "BAD_REQUEST", "message": "(sqlite3.IntegrityError) UNIQUE constraint failed: "
                 "experiment_tags.key, experiment_tags.experiment_id\n[SQL: INSERT INTO experiment_tags (\"key\", "
                 "value, experiment_id) VALUES (?, ?, ?)]"}
CREATED_MEANWHILE = {"error_code": "RESOURCE_ALREADY_EXISTS", "message": "Experiment(name=bench) already exists. "
                     "Error: (sqlite3.IntegrityError) UNIQUE constraint failed: experiments.workspace, "
                     "experiments.name"}
DENIED = {"error_code": "PERMISSION_DENIED", "message": "User does not have permission to update experiment 1"}


def locked() -> MlflowException:
    """SQLite contention on a local store (through a server, MLflow's HTTP client retries its 503 itself)."""
    return MlflowException("(sqlite3.OperationalError) database is locked", error_code=TEMPORARILY_UNAVAILABLE)


class Store:
    """A store of one experiment whose next `set_experiment_tag` fails with `error`. `other_writer`: the kind
    another writer puts there just before that failure (the race: both read no kind, both insert it)."""

    def __init__(self, error: Exception | None = None, *, other_writer: str | None = None) -> None:
        self.tags: dict[str, str] = {}
        self.error, self.other_writer, self.writes = error, other_writer, 0

    def get_experiment(self, experiment_id: str) -> SimpleNamespace:
        return SimpleNamespace(experiment_id=experiment_id, tags=dict(self.tags))

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.writes += 1
        if self.error:
            error, self.error = self.error, None
            if self.other_writer:
                self.tags[key] = self.other_writer
            raise error
        self.tags[key] = value


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.tracking.store.time, "sleep", lambda seconds: None)


@pytest.mark.parametrize("error", [lambda: RestException(DUPLICATE_TAG), locked],
                         ids=["unique-constraint", "database-locked"])
def test_the_kind_is_written_after_a_lost_race(error) -> None:
    store = Store(error())
    mark_training_experiment(store, store.get_experiment("1"))
    assert store.tags[EXPERIMENT_KIND] == TRAINING_KIND and store.writes == 2


def test_a_kind_another_writer_chose_during_the_race_is_not_written_over() -> None:
    store = Store(RestException(DUPLICATE_TAG), other_writer="genai_development")
    mark_training_experiment(store, store.get_experiment("1"))
    assert store.tags[EXPERIMENT_KIND] == "genai_development" and store.writes == 1  # re-read, not re-written


def test_the_winner_s_kind_stands_without_a_second_write() -> None:
    store = Store(RestException(DUPLICATE_TAG), other_writer=TRAINING_KIND)
    mark_training_experiment(store, store.get_experiment("1"))
    assert store.tags[EXPERIMENT_KIND] == TRAINING_KIND and store.writes == 1


def test_an_experiment_that_has_its_kind_is_not_written() -> None:
    store = Store(RestException(DENIED))
    store.tags[EXPERIMENT_KIND] = TRAINING_KIND
    mark_training_experiment(store, store.get_experiment("1"))
    assert store.writes == 0  # a reader without write access can still run against it


def test_any_other_error_is_raised_at_once() -> None:
    store = Store(RestException(DENIED))
    with pytest.raises(RestException, match="PERMISSION_DENIED"):
        mark_training_experiment(store, store.get_experiment("1"))
    assert store.writes == 1


def test_retrying_gives_up_on_a_race_that_never_ends() -> None:
    calls = []

    def always_locked() -> None:
        calls.append(1)
        raise locked()

    with pytest.raises(MlflowException, match="database is locked"):
        retrying(always_locked, attempts=3)
    assert len(calls) == 3


def test_an_experiment_created_by_another_writer_meanwhile_is_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    """`open_store` on a server: the creation race (both find no experiment, both create it) ends with the one
    experiment, whether MLflow reads it back itself or the loser's error reaches `retrying`."""
    import mlflow

    found = SimpleNamespace(experiment_id="7", tags={})
    errors = [RestException(CREATED_MEANWHILE), locked()]

    def set_experiment(name: str) -> SimpleNamespace:
        if errors:
            raise errors.pop(0)
        return found

    monkeypatch.setattr(mlflow, "set_tracking_uri", lambda uri: None)
    monkeypatch.setattr(mlflow, "set_experiment", set_experiment)
    assert open_store("http://127.0.0.1:5000", "bench") is found and not errors
