"""The same sweep against a real MLflow tracking server (SQL backend in a temp dir), as a cluster would use.

The server is its own process; the sweep goes through `bench.cli.main` in the test process."""

from __future__ import annotations

from support import TINY, finished_runs, run_cli_here


def test_two_cell_sweep_against_a_server(mlflow_server: str, tmp_path) -> None:
    result = run_cli_here("-m", *TINY, "method=lora", "method.r=2,4", f"tracker.uri={mlflow_server}",
                          f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(mlflow_server)
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(runs) == 3 and len(children) == 2
    assert set(children["status"]) == {"FINISHED"}
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to a local store by mistake
