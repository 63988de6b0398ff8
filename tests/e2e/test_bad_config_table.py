"""The table of bad input: each class a new user runs into, several cases each, through `bench.cli.main` in this
process. Every case ends in exit code 2 and one `error:` line that names the key, the bad value and what is valid
(the expected type, the valid keys or the valid choices), with no traceback; some also with `-m`.

The config classes fail while the config composes, before anything runs: no store is even created. The data and
rank classes need the data or the model's shapes; the data ones are found after the run started, which is then on
record FAILED with `failure=config`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from support import TINY, assert_one_error_line, finished_runs, run_cli_here

GOOD = [(f"review number {i} was {'great' if i % 2 else 'awful'}", "pos" if i % 2 else "neg") for i in range(60)]


def _files(folder: Path) -> dict[str, Path]:
    """Small local data files, one per way a file goes wrong (and one good one)."""
    frame = pd.DataFrame(GOOD, columns=["text", "label"]).assign(source="web")
    files = {name: folder / name for name in ("good.csv", "one-label.csv", "latin1.csv", "latin1.jsonl", "utf16.csv",
                                              "binary.csv", "ragged.csv", "empty.csv", "not.parquet", "pos.csv",
                                              "eval.csv", "test.csv", "no-labels.csv", "blank-eval.csv")}
    frame.to_csv(files["good.csv"], index=False)
    frame.assign(label="pos").to_csv(files["one-label.csv"], index=False)
    accented = frame.assign(text="café " + frame["text"])
    files["latin1.csv"].write_bytes(accented.to_csv(index=False).encode("latin-1"))
    files["latin1.jsonl"].write_bytes(accented.to_json(orient="records", lines=True, force_ascii=False)
                                      .encode("latin-1"))
    files["utf16.csv"].write_bytes(frame.to_csv(index=False).encode("utf-16"))
    files["binary.csv"].write_bytes(b"PK\x03\x04\x00\x00\xff\xfe" * 64)
    files["ragged.csv"].write_text(frame.head(5).to_csv(index=False) + "one,two,three,four\n")
    files["empty.csv"].write_text("")
    files["not.parquet"].write_text(frame.to_csv(index=False))
    frame[frame["label"] == "pos"].to_csv(files["pos.csv"], index=False)  # a train file of one label, beside ...
    for split in ("eval", "test"):  # ... validation and test files of both labels
        frame.assign(text=f"{split} " + frame["text"]).to_csv(files[f"{split}.csv"], index=False)
    frame.assign(label="").to_csv(files["no-labels.csv"], index=False)  # a label column left empty
    frame.assign(text="   ").to_csv(files["blank-eval.csv"], index=False)  # a validation file of blank texts
    return files


def _local(name: str, *more: str) -> list[str]:
    return ["data=local", f"data.path={{{name}}}", *more]


# class -> [(overrides, needles)]; `{name}` in an override is the path of that file from `_files`.
TABLE: dict[str, list[tuple[list[str], tuple[str, ...]]]] = {
    "wrong type": [
        (["trainer.lr=abc"], ("trainer.lr=abc", "a number")),
        (["method.r=1.5"], ("method.r=1.5", "an integer")),
        (["trainer.gradient_checkpointing=maybe"], ("trainer.gradient_checkpointing=maybe", "true or false")),
        (["data.labels=positive"], ("data.labels=positive", "a list")),
        (["trainer.lr=null"], ("trainer.lr=null", "a number")),
        (["method.alpha=sixteen"], ("method.alpha='sixteen'", "a number")),
        (["sweep=ranks", "seed=1,x"], ("seed=x", "an integer")),  # a preset's sweep, which needs no -m
    ],
    "unknown key": [
        (["trainer.lrr=1e-3"], ("trainer.lrr=1e-3", "did you mean trainer.lr?", "valid keys of trainer", "batch_size")),
        (["+method.rank=4"], ("method.rank=4", "valid keys of method", "r, svd_iters", "target_modules")),
        (["+epochs=3"], ("epochs=3", "valid keys", "trainer", "seed")),
        (["++data.textcolumn=body"], ("data.textcolumn=body", "data.text_column", "valid keys of data")),
    ],
    "unknown group choice": [
        (["model=bert-huge"], ("bert-huge", "minilm", "tiny-bert")),
        (["method=prefix"], ("prefix", "lora", "qlora")),
        (["hydra/launcher=ray"], ("hydra/launcher", "'ray'", "joblib", "ray_cluster")),
    ],
    "an override Hydra cannot read": [
        (["method.r=[4,8"], ("method.r=[4,8", "override_grammar")),
        (["method.r=4,8"], ("method.r=4,8", "-m", "method.r=[4,8]")),
        (["trainer.lr=${method.lrate}"], ("trainer.lr=${method.lrate}", "method.lrate", "not found")),
        (["~trainer.lr"], ("trainer.lr", "cannot be deleted")),
    ],
    "out-of-range value": [
        (["method.r=0"], ("method.r=0", "> 0")),
        (["method.dropout=1"], ("method.dropout=1.0", "[0, 1)")),
        (["data.eval_fraction=1.5"], ("data.eval_fraction=1.5", "(0, 1)")),
        (["method.bias=some"], ("method.bias='some'", "none, all, lora_only")),
        (["data.encoding=utf-9"], ("data.encoding='utf-9'", "utf-8", "latin-1")),
        (["data.labels=[positive]"], ("data.labels=['positive']", "at least two")),
        (["seed=-1"], ("seed=-1", "in [0, 4294967295]")),
        (["trainer.warmup_ratio=2"], ("trainer.warmup_ratio=2.0", "in [0, 1)")),
        (["trainer.weight_decay=-0.01"], ("trainer.weight_decay=-0.01", ">= 0")),
        (["data.split_seed=-5"], ("data.split_seed=-5", "in [0, 4294967295]")),
    ],
    "a folder bench cannot write": [
        (["hydra.run.dir={good.csv}/out"], ("hydra.run.dir=", "good.csv", "lies under the file")),
        (["output_dir={good.csv}"], ("output_dir=", "good.csv", "is a file")),
    ],
    "rows without a text or a label, none left": [
        (_local("no-labels.csv"), ("all 60 rows of data.path=", "no-labels.csv", "60 without a label",
                                   "data.label_column='label'")),
        (_local("good.csv", "data.eval_path={blank-eval.csv}"), ("all 60 rows of data.eval_path=", "blank-eval.csv",
                                                                  "60 without a text")),
    ],
    "file not text in the declared encoding": [
        (_local("latin1.csv"), ("data.path=", "latin1.csv", "data.encoding='utf-8'", "data.encoding=cp1252")),
        (_local("latin1.jsonl"), ("latin1.jsonl", "data.encoding='utf-8'", "data.encoding=cp1252")),
        (_local("utf16.csv"), ("utf16.csv", "data.encoding='utf-8'", "data.encoding=utf-16")),
        (_local("binary.csv"), ("binary.csv", "data.encoding='utf-8'", "not a text file")),
    ],
    "file pandas cannot read": [
        (_local("ragged.csv"), ("data.path=", "ragged.csv", "Expected 3 fields")),
        (_local("empty.csv"), ("empty.csv", "No columns")),
        (_local("not.parquet"), ("not.parquet", "cannot be read as .parquet")),
    ],
    "fewer than two labels": [
        (_local("one-label.csv"), ("data.label_column='label'", "'pos'", "60 rows")),
        (_local("good.csv", "data.label_column=source"), ("data.label_column='source'", "'web'")),
        (_local("pos.csv", "data.eval_path={eval.csv}", "data.test_path={test.csv}"),
         ("train split", "data.label_column='label'", "'pos'")),
    ],
    "LoRA rank above a targeted layer's size": [
        (["method.r=65"], ("method.r=65", "in_features=64, out_features=64", "method.r=64")),
        (["method=dora", "method.r=512", "method.target_modules=mlp"], ("method.r=512", "intermediate.dense",
                                                                        "method.r=64")),
        (["method=qalora", "method.r=128"], ("method.r=128", "in_features=64, out_features=64", "method.r=64")),
    ],
    "validation or test split too small": [
        (_local("good.csv", "data.eval_fraction=0.05"), ("validation split has 3 rows", "data.eval_fraction=0.05")),
        (_local("good.csv", "data.test_fraction=0.06"), ("test split has 4 rows", "data.test_fraction=0.06")),
    ],
}
# Found after the run started (they need the data): the run is on record FAILED.
RECORDED = {"file not text in the declared encoding", "file pandas cannot read", "fewer than two labels",
            "validation or test split too small", "rows without a text or a label, none left"}
CASES = [pytest.param(kind, overrides, needles, id=f"{kind}: {' '.join(overrides)}")
         for kind, rows in TABLE.items() for overrides, needles in rows]


@pytest.mark.parametrize(("kind", "overrides", "needles"), CASES)
def test_bad_input_is_one_line_and_exit_2(kind: str, overrides: list[str], needles: tuple[str, ...],
                                          tmp_path: Path) -> None:
    files = _files(tmp_path)
    given = list(overrides)
    for name, path in files.items():
        given = [override.replace(f"{{{name}}}", str(path)) for override in given]
    store = tmp_path / "mlflow.db"
    folder = [] if any(o.startswith("hydra.run.dir=") for o in given) else [f"hydra.run.dir={tmp_path / 'out'}"]
    result = run_cli_here(*TINY, *given, f"tracker.uri=sqlite:///{store}", *folder, cwd=tmp_path)
    assert_one_error_line(result, *needles)
    if kind in RECORDED:
        run = finished_runs(f"sqlite:///{store}").iloc[0]
        assert (run["status"], run["tags.failure"]) == ("FAILED", "config")
    else:
        assert not store.exists()  # refused before any run, or any store, existed


def test_every_class_has_several_cases() -> None:
    assert all(len(rows) >= 2 for rows in TABLE.values()), {kind: len(rows) for kind, rows in TABLE.items()}


MULTIRUN = [
    (["trainer.lr=1e-3,abc"], ("trainer.lr=abc", "a number")),
    (["method=full,lora", "+trainer.lrr=1"], ("trainer.lrr=1", "valid keys of trainer")),
    (["method.r=4,8", "method.dropout=0.1,x"], ("method.dropout=x", "a number")),
    (["sweep=ranks", "trainer.epochs=1,2,x"], ("trainer.epochs=x", "an integer")),
    (["seed=1,2", "method=full,prefix"], ("prefix", "qlora")),
    (["seed=1,2", "method.r=[4"], ("method.r=[4", "override_grammar")),
]


@pytest.mark.parametrize(("overrides", "needles"), MULTIRUN, ids=[" ".join(o) for o, _ in MULTIRUN])
def test_a_sweep_with_a_bad_value_is_refused_before_it_starts(overrides: list[str], needles: tuple[str, ...],
                                                               tmp_path: Path) -> None:
    """With `-m`, each job's config is composed before the sweep starts: a bad value in any cell is refused with
    the same line and exit code, and no parent run, or store, is created."""
    store = tmp_path / "mlflow.db"
    result = run_cli_here("-m", *TINY, *overrides, f"tracker.uri=sqlite:///{store}",
                          f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert_one_error_line(result, *needles)
    assert not store.exists() and not (tmp_path / "sweep").exists()


def test_rows_without_a_text_or_a_label_are_counted_and_named_once(tmp_path: Path) -> None:
    """100 rows, 20 without a text and 23 without a label: the 57 others train, and the 43 are one `warning:` line
    and the metric data/incomplete_rows_dropped, not a silent loss."""
    rows = [(f"review number {i} was {'great' if i % 2 else 'awful'}", "pos" if i % 2 else "neg") for i in range(100)]
    frame = pd.DataFrame(rows, columns=["text", "label"])
    frame.loc[0:19, "text"] = ""  # a blank text
    frame.loc[20:24, "text"] = "   "  # whitespace is no text either
    frame.loc[20:42, "label"] = None  # 3 of these rows also lack a text; 23 - 5 + 5 = 23 lack a label only
    frame.loc[20:24, "text"] = [f"review {i} with no label" for i in range(20, 25)]
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli_here(*TINY, "data=local", f"data.path={path}", f"tracker.uri={store}",
                          f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = [line for line in result.stderr.splitlines() if "rows dropped" in line]
    assert warned == ["warning: data=local: 43 of 100 rows dropped, 20 without a text (data.text_column='text') and "
                      "23 without a label (data.label_column='label'); logged as data/incomplete_rows_dropped"]
    run = finished_runs(store).iloc[0]
    assert run["metrics.data/incomplete_rows_dropped"] == 43
    assert run["metrics.data/train_rows"] + run["metrics.data/eval_rows"] + run["metrics.data/test_rows"] <= 57
