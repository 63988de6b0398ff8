"""Pure pandas: tidy runs, a headline per configuration with 95 % confidence intervals over seeds, deltas
against full fine-tuning, the Pareto frontier, and the slices the plots need. Nothing here talks to MLflow."""

from __future__ import annotations

import math

import pandas as pd

# Friendly column → the column `mlflow.search_runs` returns (the last logged value of each metric).
METRICS = {
    "accuracy": "metrics.eval/accuracy",
    "f1": "metrics.eval/f1",
    "peak_bytes": "metrics.mem/peak_bytes",
    "peak_reserved_bytes": "metrics.mem/peak_reserved_bytes",
    "peak_allocated_bytes": "metrics.mem/peak_allocated_bytes",
    "tokens_per_s": "metrics.train/tokens_per_s",
    "train_time_s": "metrics.train/time_s",
    "trainable_params": "metrics.params/trainable",
    "trainable_pct": "metrics.params/trainable_pct",
    "adapter_bytes": "metrics.artifact/adapter_bytes",
    "weight_bits_per_param": "metrics.mem/weight_bits_per_param",
    "energy_j": "metrics.gpu/energy_j",
}
KEYS = ("dataset", "model", "technique", "r", "target_modules", "config")  # one headline row per combination
ADAPTER_PARAMS = ("method.r", "method.alpha", "method.dropout", "method.target_modules", "method.bias")
TECHNIQUE_ORDER = {"full": 0, "lora": 1, "qlora": 2}
REFERENCE = "full"  # deltas compare each technique with full fine-tuning of the same model


def _not_config(param: str) -> bool:
    """Params that never make two runs different configurations: the seed, and where results are written."""
    return param in ("seed", "output_dir") or param.startswith("tracker.")


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)


def tidy(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run with friendly columns, and `group`: the runs that differ only by seed share one."""
    tags = {name: _column(runs, f"tags.{name}") for name in ("model", "technique", "dataset")}
    out = pd.DataFrame({
        "run_id": runs["run_id"], "run_name": _column(runs, "tags.mlflow.runName").fillna(runs["run_id"]),
        "status": runs["status"], "experiment_id": runs["experiment_id"],
        "dataset": tags["dataset"].fillna(_column(runs, "params.data.name")).fillna("?"),
        "model": tags["model"].fillna(_column(runs, "params.model.name")).fillna("?"),
        "technique": tags["technique"].fillna(_column(runs, "params.method.name")).fillna("?"),
        "seed": pd.to_numeric(_column(runs, "params.seed"), errors="coerce"),
        "start_time": runs["start_time"], "end_time": runs["end_time"],
        "failure": _column(runs, "tags.failure"), "error": _column(runs, "tags.error"),
        "sweep_id": _column(runs, "tags.sweep_id"), "git_sha": _column(runs, "tags.git_sha"),
    })
    adapter = out["technique"] != REFERENCE  # rank and targets mean nothing for full fine-tuning
    out["r"] = pd.to_numeric(_column(runs, "params.method.r"), errors="coerce").where(adapter)
    out["target_modules"] = _column(runs, "params.method.target_modules").where(adapter).fillna("")
    out["config"] = _config_labels(runs, out)
    for friendly, column in METRICS.items():
        out[friendly] = pd.to_numeric(_column(runs, column), errors="coerce")
    out["group"] = out.groupby(list(KEYS), dropna=False, sort=False).ngroup()
    return out


def _config_labels(runs: pd.DataFrame, out: pd.DataFrame) -> pd.Series:
    """`lr=0.001, alpha=32`: the params (besides rank, targets and seed) that vary within a model and technique."""
    shown = ("method.r", "method.target_modules")  # they have columns of their own
    params = [c for c in runs.columns if c.startswith("params.") and not _not_config(c[7:]) and c[7:] not in shown]
    labels = pd.Series("", index=runs.index, dtype=object)
    for (_, _, technique), index in out.groupby(["dataset", "model", "technique"], dropna=False).groups.items():
        block = runs.loc[index, params]
        varying = [c for c in params if block[c].nunique(dropna=False) > 1
                   and not (technique == REFERENCE and c[7:] in ADAPTER_PARAMS)]
        parts = [c[7:].removeprefix("method.") + "=" + block[c].fillna("null").astype(str) for c in varying]
        if parts:
            labels.loc[index] = parts[0].str.cat(parts[1:], sep=", ") if len(parts) > 1 else parts[0]
    return labels


def t_value(n: int) -> float:
    """Student's t for a two-sided 95 % interval from n samples (n - 1 degrees of freedom)."""
    from scipy.special import stdtrit

    return float(stdtrit(n - 1, 0.975))


def headline(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (finished runs with an accuracy): n, mean accuracy and its 95 % CI, the
    other metrics' means, deltas against full fine-tuning, and whether it is on the Pareto frontier."""
    done = runs[(runs["status"] == "FINISHED") & runs["accuracy"].notna()]
    grouped = done.groupby("group", sort=False)
    table = grouped[list(KEYS)].first()
    table["n"] = grouped["accuracy"].count()
    table["accuracy_mean"] = grouped["accuracy"].mean()
    table["accuracy_std"] = grouped["accuracy"].std(ddof=1)
    t = table["n"].map(lambda n: t_value(n) if n > 1 else math.nan)
    table["accuracy_ci95"] = t * table["accuracy_std"] / table["n"] ** 0.5
    table["accuracy_low"] = table["accuracy_mean"] - table["accuracy_ci95"]
    table["accuracy_high"] = table["accuracy_mean"] + table["accuracy_ci95"]
    others = [m for m in METRICS if m != "accuracy"]
    table[others] = grouped[others].mean()
    table = table.reset_index()
    table["label"] = _labels(table, several_models=runs["model"].nunique() > 1,
                             several_datasets=runs["dataset"].nunique() > 1)
    table = _with_deltas(table)
    table["pareto"] = pareto_mask(table["peak_bytes"], table["accuracy_mean"])
    order = table["technique"].map(lambda t: TECHNIQUE_ORDER.get(t, len(TECHNIQUE_ORDER)))
    table = table.assign(_order=order).sort_values(["dataset", "model", "_order", "technique", "target_modules",
                                                    "r", "config"], na_position="first", kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def _labels(table: pd.DataFrame, *, several_models: bool, several_datasets: bool) -> pd.Series:
    """`lora r=16 qv`, prefixed with the model and data set only when the report spans several."""
    def label(row: pd.Series) -> str:
        parts = [row["dataset"]] if several_datasets else []
        parts += [row["model"]] if several_models else []
        parts.append(row["technique"])
        parts += [f"r={row['r']:g}"] if pd.notna(row["r"]) else []
        parts += [row["target_modules"]] if row["target_modules"] else []
        parts += [row["config"]] if row["config"] else []
        return " ".join(str(p) for p in parts)

    return table.apply(label, axis=1) if len(table) else pd.Series(dtype=object)


def _with_deltas(table: pd.DataFrame) -> pd.DataFrame:
    """Δ accuracy and memory / speed / size ratios against the model's full fine-tuning (its most accurate
    configuration when there are several); blank where the model has no full fine-tuning run."""
    columns = ["accuracy_mean", "peak_bytes", "tokens_per_s", "adapter_bytes", "label"]
    full = (table[table["technique"] == REFERENCE].sort_values("accuracy_mean", ascending=False)
            .drop_duplicates(["dataset", "model"])[["dataset", "model", *columns]])
    ref = table[["dataset", "model"]].merge(full, on=["dataset", "model"], how="left")
    ref.index = table.index
    return table.assign(
        delta_accuracy=table["accuracy_mean"] - ref["accuracy_mean"],
        memory_ratio=table["peak_bytes"] / ref["peak_bytes"],
        speed_ratio=table["tokens_per_s"] / ref["tokens_per_s"],
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
    for _, rows in adapters.groupby(["dataset", "model", "technique", "target_modules", "config"], sort=False):
        first = rows.iloc[0]
        name = first["label"].replace(f"r={first['r']:g}", "").replace("  ", " ").strip()
        lines.append((name, rows.sort_values("r")))
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
    done = runs[runs["status"] == "FINISHED"].sort_values(["seed", "run_id"])
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
    stats = table[["group", "label", "n", "accuracy_mean", "accuracy_ci95", "accuracy_low", "accuracy_high",
                   "delta_accuracy", "memory_ratio", "speed_ratio", "size_ratio"]]
    stats = stats.rename(columns={"label": "configuration", "n": "group_n"}).rename(
        columns=lambda c: f"group_{c}" if c.startswith("accuracy") else c)
    identity = runs[["run_id", "run_name", "status", "experiment_id", "dataset", "model", "technique", "r",
                     "target_modules", "config", "seed", "group", "failure", "error", "sweep_id", "git_sha",
                     "start_time", "end_time"]]
    merged = identity.merge(stats, on="group", how="left")
    logged = raw[[c for c in raw.columns if c.startswith(("metrics.", "params."))]].reset_index(drop=True)
    return pd.concat([merged.reset_index(drop=True), logged], axis=1)
