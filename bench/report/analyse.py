"""Pure pandas: tidy runs, a headline per configuration with 95 % confidence intervals over seeds (validation and,
where runs logged it, test), deltas against full fine-tuning, the Pareto frontier, and the slices the plots need.
Nothing here talks to MLflow. Memory figures and devices are `memory`'s; labels `labels`'; every comparison here
stays within one data set, one device and one stage of a fair comparison."""

from __future__ import annotations

import math

import pandas as pd

from bench.core.intervals import mean_interval
from bench.core.metrics import EVAL_ACCURACY, TEST_ACCURACY, TRAIN_TOKENS_PER_S
from bench.report import memory, step_time, timing
from bench.report.compare import best_on_validation
from bench.report.labels import config_labels, labels, several
from bench.report.logged import columns
from bench.techniques import REFERENCE, report_order

# Friendly column → the column `mlflow.search_runs` returns (the last logged value of each metric).
METRICS = {
    **columns({"accuracy": EVAL_ACCURACY, "f1": "eval/f1",  # eval/*: the validation split
               "test_accuracy": TEST_ACCURACY, "test_f1": "test/f1",  # test/*: reported, never chosen on
               "exact_match": "eval/exact_match", "test_exact_match": "test/exact_match",  # a causal LM's generations
               "tokens_per_s": TRAIN_TOKENS_PER_S, "train_time_s": "train/time_s", "train_steps": "train/steps",
               "forgetting": "eval/forgetting",  # causal LMs: general-text loss after minus before training
               "trainable_params": "params/trainable", "trainable_pct": "params/trainable_pct",
               "adapter_bytes": "artifact/adapter_bytes", "energy_j": "gpu/energy_j",
               "eval_rows": "data/eval_rows"}),  # the rows a validation accuracy is a proportion of
    **memory.METRICS, **step_time.METRICS,
}
# One headline row per combination. The device is one of them: a GPU's and a CPU's figures never average together;
# so is the stage of a fair comparison (`fair/stage`: blank outside one), so tuned and untuned runs never do either.
KEYS = ("dataset", "model", "device", "fair_id", "stage", "technique", "r", "target_modules", "config")
SCOPE = ["dataset", "model", "device", "fair_id", "stage"]  # where deltas and ratios find their full fine-tuning
ACCURACIES = {"accuracy": "accuracy", "test_accuracy": "test_accuracy"}  # run column → the headline's prefix
TECHNIQUE_ORDER = {name: i for i, name in enumerate(report_order())}  # full; lora and its variants; qlora and its
# REFERENCE: deltas compare each technique with full fine-tuning of the same model on the same device


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)


def tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per run with friendly columns; `group`: the runs that differ only by seed share one;
    `superseded`: a FINISHED run repeated later with the same config hash (only the latest counts)."""
    runs = raw[~_is_sweep_parent(raw)]
    tags = {name: _column(runs, f"tags.{name}") for name in ("model", "technique", "dataset")}
    out = pd.DataFrame({
        "run_id": runs["run_id"], "run_name": _column(runs, "tags.mlflow.runName").fillna(runs["run_id"]),
        "status": runs["status"], "experiment_name": _column(runs, "experiment_name"),
        "dataset": tags["dataset"].fillna(_column(runs, "params.data.name")).fillna("?"),
        "model": tags["model"].fillna(_column(runs, "params.model.name")).fillna("?"),
        "technique": tags["technique"].fillna(_column(runs, "params.method.name")).fillna("?"),
        "device": memory.device(runs),
        "seed": _whole(_column(runs, "params.seed")),
        "start_time": runs["start_time"], "end_time": runs["end_time"],
        "failure": _column(runs, "tags.failure"), "error": _column(runs, "tags.error"),
        "sweep_id": _column(runs, "tags.sweep_id"), "git_sha": _column(runs, "tags.git_sha"),
        "fair_id": _column(runs, "tags.fair/id").fillna(""), "stage": _column(runs, "tags.fair/stage").fillna(""),
        "lr": pd.to_numeric(_column(runs, "params.trainer.lr"), errors="coerce"),
        "lr_chosen": pd.to_numeric(_column(runs, "tags.fair/lr_chosen"), errors="coerce"),
        "chosen_on": _column(runs, "tags.fair/chosen_on"),
        "timing": timing.state(_column(runs, "tags.timing/shared")),
        "scoring": _column(runs, "tags.eval/scoring"),  # a causal LM's: likelihood or generation
    })
    adapter = out["technique"] != REFERENCE  # rank and targets mean nothing for full fine-tuning
    out["r"] = _whole(_column(runs, "params.method.r").where(adapter))
    out["target_modules"] = _column(runs, "params.method.target_modules").where(adapter).fillna("")
    out[["config", "line_config"]] = config_labels(runs, out, SCOPE)
    for friendly, column in METRICS.items():
        out[friendly] = pd.to_numeric(_column(runs, column), errors="coerce")
    # A causal LM scored by generation has no accuracy: its validation and test figure is the exact match of its
    # generated answers (the scoring column says which), so the headline, the recommendation and the checks hold it.
    generated = out["accuracy"].isna() & out["exact_match"].notna()
    out.loc[generated, "accuracy"] = out.loc[generated, "exact_match"]
    out.loc[generated, "test_accuracy"] = out.loc[generated, "test_exact_match"]
    out["s_per_1k_steps"] = timing.per_run(out)
    for friendly, column in memory.PEAK_TAGS.items():
        out[friendly] = _column(runs, column)
    out["group"] = out.groupby(list(KEYS), dropna=False, sort=False).ngroup()
    config_hash = _column(runs, "tags.config_hash")
    # A fair comparison's final run may repeat the config (seed and rate) of one of its tuning runs: a role apart,
    # not a rerun, so repeats are only looked for within a stage.
    return _mark_repeats(out, config_hash.where(config_hash.isna(), config_hash.astype(str) + "|" + out["stage"]))


def _whole(text: pd.Series) -> pd.Series:
    """Numbers from param strings, as integers (blank allowed) when they all are, so `8` never reads `8.0`."""
    values = pd.to_numeric(text, errors="coerce")
    known = values.dropna()
    return values.astype("Int64") if (known == known.round()).all() else values


def _is_sweep_parent(raw: pd.DataFrame) -> pd.Series:
    """A sweep's parent run holds the sweep's settings, not a result: tagged as such, or named as a parent."""
    parents = set(_column(raw, "tags.mlflow.parentRunId").dropna())
    return (_column(raw, "tags.sweep_role") == "parent") | raw["run_id"].isin(parents)


def _mark_repeats(out: pd.DataFrame, config_hash: pd.Series) -> pd.DataFrame:
    """A rerun (`force=true`) or a retried cell: the same config hash, seed included, run more than once."""
    finished = (out["status"] == "FINISHED") & config_hash.notna()
    newest_first = out.assign(hash=config_hash)[finished].sort_values("start_time", ascending=False)
    superseded = newest_first["hash"].duplicated().reindex(out.index, fill_value=False)
    retried = ~finished & config_hash.isin(set(config_hash[finished]))
    note = pd.Series("", index=out.index, dtype=object)
    note[superseded] = "superseded: the same config finished again later"
    note[retried] = "the same config finished in another run"
    return out.assign(superseded=superseded, note=note)


def headline(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (finished runs with a validation accuracy): n, mean validation accuracy and its
    95 % CI, the same of test accuracy where logged, the other metrics' means, deltas against full fine-tuning,
    and whether it is on the Pareto frontier."""
    done = runs[(runs["status"] == "FINISHED") & runs["accuracy"].notna() & ~runs["superseded"]
                & (runs["stage"] != timing.RETIME)]  # a re-timing run adds timing to its final configuration only
    grouped = done.groupby("group", sort=False)
    table = grouped[[*KEYS, "line_config"]].first()
    for column, prefix in ACCURACIES.items():
        stats = mean_interval(grouped[column])
        table[[f"{prefix}_{name}" for name in stats.columns]] = stats
    table["n"] = table["accuracy_n"]
    others = [m for m in METRICS if m not in ACCURACIES]
    table[others] = grouped[others].mean()
    table["forgetting_ci95"] = mean_interval(grouped["forgetting"])["ci95"]
    table = table.reset_index()
    table = table.join(timing.alone_figures(runs, table), on="group")
    table["timing_label"] = [timing.label(t, n) for t, n in zip(table["timing"], table["alone_n"], strict=True)]
    spans = several(runs)
    table["label"] = labels(table, **spans)
    table["line"] = labels(table, **spans, drop=("r",), config="line_config")  # a rank-sweep line
    table["series"] = labels(table, **spans, drop=("r", "target_modules"))  # a target-comparison series
    table = _with_deltas(table)
    table["pareto"] = False  # accuracies on different data sets, memory on different devices, do not compete
    for _, rows in table.groupby(["dataset", "device"]):
        table.loc[rows.index, "pareto"] = pareto_mask(rows["tensor_peak_bytes"], rows["accuracy_mean"])
    order = table["technique"].map(lambda t: TECHNIQUE_ORDER.get(t, len(TECHNIQUE_ORDER)))
    table = table.assign(_order=order).sort_values(
        ["dataset", "device", "model", "fair_id", "stage", "_order", "technique", "target_modules", "r", "config"],
        na_position="first", kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def _with_deltas(table: pd.DataFrame) -> pd.DataFrame:
    """Δ accuracy (validation and test) and tensor-peak / speed / size ratios against full fine-tuning in the same
    scope (its configuration best on validation when there are several); blank where there is none there."""
    columns = ["accuracy_mean", "test_accuracy_mean", "tensor_peak_bytes", "alone_tokens_per_s", "adapter_bytes",
               "label"]
    full = best_on_validation(table[table["technique"] == REFERENCE], SCOPE)[[*SCOPE, *columns]]
    ref = table[SCOPE].merge(full, on=SCOPE, how="left")
    ref.index = table.index
    return table.assign(
        delta_accuracy=table["accuracy_mean"] - ref["accuracy_mean"],
        delta_test_accuracy=table["test_accuracy_mean"] - ref["test_accuracy_mean"],
        memory_ratio=table["tensor_peak_bytes"] / ref["tensor_peak_bytes"],
        speed_ratio=table["alone_tokens_per_s"] / ref["alone_tokens_per_s"],  # timed alone on both sides
        size_ratio=table["adapter_bytes"] / ref["adapter_bytes"],
        reference=ref["label"],
    )


def pareto_mask(memory: pd.Series, accuracy: pd.Series) -> pd.Series:
    """True for points no other point beats on both axes (less memory and at least as accurate, or vice versa)."""
    mask = pd.Series(False, index=memory.index)
    valid = pd.DataFrame({"memory": memory, "accuracy": accuracy}).dropna()
    best = -math.inf
    for index, row in valid.sort_values(["memory", "accuracy"], ascending=[True, False]).iterrows():
        if row["accuracy"] > best:
            mask[index], best = True, row["accuracy"]
    return mask


def rank_lines(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(name, rows by rank) per target preset for the rank sweep; empty unless some line has two ranks."""
    adapters = table[table["r"].notna()]
    lines = []
    for name, rows in adapters.groupby("line", sort=False):
        lines.append((str(name), rows.sort_values("r")))
    return lines if any(rows["r"].nunique() > 1 for _, rows in lines) else []


def target_slice(table: pd.DataFrame) -> tuple[float, pd.DataFrame] | None:
    """The rank with the most target presets compared (two at least) and its rows, or None."""
    adapters = table[table["r"].notna()]
    if adapters.empty:
        return None
    presets = adapters.groupby("r")["target_modules"].nunique()
    runs = adapters.groupby("r")["n"].sum()
    best = max(presets.index, key=lambda r: (presets[r], runs[r], -r))
    if presets[best] < 2:
        return None
    return float(best), adapters[adapters["r"] == best]


def pick_runs(runs: pd.DataFrame, table: pd.DataFrame, *, per_group: int, cap: int) -> list[str]:
    """A few finished runs of each headline configuration (lowest seeds first), at most `cap` in all, so
    fetching per-run histories and artifacts stays cheap however many runs the report covers."""
    done = runs[(runs["status"] == "FINISHED") & ~runs["superseded"]].sort_values(["seed", "run_id"])
    by_group = {group: list(rows["run_id"]) for group, rows in done.groupby("group", sort=False)}
    chosen: list[str] = []
    for round_ in range(per_group):  # round-robin, so a cap cuts seeds before it cuts configurations
        for group in table["group"]:
            ids = by_group.get(group, [])
            if round_ < len(ids) and len(chosen) < cap:
                chosen.append(ids[round_])
    return chosen


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that did not finish (FAILED, KILLED, still RUNNING), oldest first."""
    return runs[runs["status"] != "FINISHED"].sort_values("start_time", kind="stable")


def provenance(raw: pd.DataFrame) -> list[tuple[str, str]]:
    """(what, values with run counts) for package versions, hardware, git sha, sweep id and overrides."""
    names = sorted(c for c in raw.columns if c.startswith(("tags.version/", "tags.hw/")))
    names += [c for c in ("tags.git_sha", "tags.sweep_id", "tags.sweep_overrides") if c in raw]
    return [(name[5:], _value_counts(raw[name])) for name in names]


def _value_counts(column: pd.Series, limit: int = 20) -> str:
    counts = column.dropna().astype(str).value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    shown = [f"{value} ({count} runs)" for value, count in counts.head(limit).items()]
    more = [f"… and {len(counts) - limit} more"] if len(counts) > limit else []
    return "; ".join(shown + more)


def time_range(runs: pd.DataFrame) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The first run's start and the last run's end (None when unknown)."""
    start, end = runs["start_time"].min(), runs["end_time"].max()
    return (None if pd.isna(start) else start), (None if pd.isna(end) else end)


def results_table(raw: pd.DataFrame, runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """results.csv: one row per run, its configuration's figures, then every metric and param as logged."""
    means = ["tensor_peak_bytes", *memory.AT_PEAK]  # the configuration's means behind its ratio and breakdown
    test = ["test_accuracy_n", "test_accuracy_mean", "test_accuracy_ci95", "test_accuracy_low", "test_accuracy_high"]
    stats = table[["group", "label", "n", "accuracy_mean", "accuracy_ci95", "accuracy_low", "accuracy_high", *test,
                   *means, "delta_accuracy", "delta_test_accuracy", "memory_ratio", "speed_ratio", "size_ratio",
                   "reference"]]
    stats = stats.rename(columns={"label": "configuration", "n": "group_n"}).rename(
        columns=lambda c: f"group_{c}" if c.startswith(("accuracy", "test_")) or c in means else c)
    identity = runs[["run_id", "run_name", "status", "superseded", "note", "experiment_name", "dataset", "model",
                     "device", "fair_id", "stage", "technique", "r", "target_modules", "config", "lr", "lr_chosen",
                     "chosen_on", "seed", "group", "timing", "peak_module",
                     "peak_phase", "failure", "error", "sweep_id", "git_sha", "start_time", "end_time"]]
    merged = identity.merge(stats, on="group", how="left").astype({"group_n": "Int64"})
    logged = raw.set_index("run_id").loc[runs["run_id"]]  # the sweep parents left out, as in `runs`
    logged = logged[[c for c in logged.columns if c.startswith(("metrics.", "params."))]].dropna(axis=1, how="all")
    logged = logged.reset_index(drop=True)  # columns only the parents had are gone too
    return pd.concat([merged.reset_index(drop=True), logged], axis=1)
