"""Which rank's failure ended a distributed run, from torchrun's report: the first by time, and within the same
second (the report's resolution) a broken connection after any other failure."""

from __future__ import annotations

import json

from bench.distributed.launch import first_failure


def _report(tmp_path, *failures: dict) -> object:
    path = tmp_path / "failures.json"
    path.write_text(json.dumps(list(failures)))
    return path


def test_the_earliest_failure_wins(tmp_path) -> None:
    report = _report(tmp_path, {"rank": 0, "message": "ValueError: late", "timestamp": 101, "error_file_mtime": 1.0},
                     {"rank": 1, "message": "ValueError: early", "timestamp": 100, "error_file_mtime": 9.0})
    assert first_failure(report).rank == 1


def test_within_a_second_a_broken_connection_is_a_consequence(tmp_path) -> None:
    closed = "RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1201"
    report = _report(tmp_path, {"rank": 0, "message": closed, "timestamp": 100, "error_file_mtime": 1.0},
                     {"rank": 1, "message": "RuntimeError: boom", "timestamp": 100, "error_file_mtime": 2.0})
    failure = first_failure(report)
    assert (failure.rank, failure.error) == (1, "RuntimeError: boom")


def test_a_rank_killed_by_a_signal_left_no_file_and_comes_first_in_its_second(tmp_path) -> None:
    report = _report(tmp_path, {"rank": 1, "message": "RuntimeError: x", "timestamp": 100, "error_file_mtime": 5.0},
                     {"rank": 0, "message": "Signal 9 (SIGKILL) received by PID 7", "timestamp": 100,
                      "error_file_mtime": 0.0})
    assert first_failure(report).rank == 0


def test_failure_kinds_follow_a_single_process(tmp_path) -> None:
    report = _report(tmp_path, {"rank": 1, "message": "NonFiniteLoss: training loss became nan at step 3",
                                "timestamp": 1, "error_file_mtime": 1.0})
    assert first_failure(report).kind == "nan"
    assert first_failure(tmp_path / "absent.json") is None
