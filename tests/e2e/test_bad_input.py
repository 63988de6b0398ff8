"""Bad input gets one line naming the bad value and the valid choices, a non-zero exit, no traceback.

The full catalogue of bad values is in tests/reliability/test_validation.py, and the table of each class of bad
input in tests/e2e/test_bad_config_table.py. The unknown-choice, wrong-type and unknown-command cases run as real
processes; the rest go through `bench.cli.main` in this process."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import TINY, assert_one_error_line, finished_runs, run_cli, run_cli_here


@pytest.mark.parametrize(("override", "needles"), [
    ("model=gpt-17", ("gpt-17", "minilm", "tiny-bert")),
    ("method=sgd-magic", ("sgd-magic", "full", "lora", "qlora")),
    ("data=my-tweets", ("my-tweets", "tweets", "imdb", "local")),
    ("method=full,lora,nope", ("nope", "qlora")),
])
def test_unknown_group_choice(override: str, needles: tuple[str, ...], tmp_path) -> None:
    assert_one_error_line(run_cli(override, cwd=tmp_path), *needles)


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_wrong_type_in_a_real_process(sweep: bool, tmp_path) -> None:
    """A text for a number, as its own process, alone and in one value of a sweep: the schema refuses it while the
    config composes (no traceback, no store), and Hydra's exit and ours agree on exit code 2."""
    overrides = ["-m", "trainer.lr=1e-3,abc"] if sweep else ["trainer.lr=abc"]
    result = run_cli(*overrides, *TINY, f"tracker.uri=sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path)
    assert_one_error_line(result, "trainer.lr=abc", "a number")
    assert not (tmp_path / "mlflow.db").exists()


def test_error_inside_a_run_is_recorded_as_a_failed_run(store: str, tmp_path) -> None:
    """A config error found after the run started (here: target modules) ends that run FAILED."""
    result = run_cli_here(*TINY, "method.target_modules=[nonexistent_proj]", f"tracker.uri={store}",
                          f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_error_line(result, "nonexistent_proj", "query", "value")  # and it lists the real names
    run = finished_runs(store).iloc[0]
    assert run["status"] == "FAILED"
    assert run["tags.failure"] == "config"
    assert "nonexistent_proj" in run["tags.error"]


def test_qlora_without_bitsandbytes(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` raises ImportError
    assert_one_error_line(run_cli_here("method=qlora", "model=tiny-bert", cwd=tmp_path),
                          "method=qlora", "bitsandbytes", "method=lora")


def test_unknown_command(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main(['trian']))"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert_one_error_line(result, "trian", "run", "report")


def test_a_report_folder_that_cannot_be_written_is_refused_before_any_run_is_read(tmp_path) -> None:
    from support import call_main

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = call_main(["report", "--out", str(blocker / "report"), "--tracking-uri",
                        f"sqlite:///{tmp_path / 'none.db'}"], cwd=tmp_path)
    assert_one_error_line(result, "--out=", "a-file", "lies under the file")
    assert not (tmp_path / "none.db").exists()  # the store was never opened
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # and the check left nothing behind
