"""What to call a configuration: the params that set it apart (`config`), and its label in tables and plots
(`[cpu] minilm lora r=8 qv alpha=32`, with `tuned` for a fair comparison's final runs). Pure pandas."""

from __future__ import annotations

import pandas as pd

from bench.techniques import REFERENCE, TECHNIQUES

ADAPTER_PARAMS = ("method.r", "method.alpha", "method.dropout", "method.target_modules", "method.bias")
FINAL = "final"  # fair/stage of a fair comparison's runs at the tuned rate (`tune`: the search for it)


def not_config(param: str) -> bool:
    """Params that never make two runs different configurations: the seed, where results are written, and how a
    fair comparison was organised (its stage is a tag and a key of its own)."""
    return param in ("seed", "output_dir") or param.startswith(("tracker.", "fair."))


def config_labels(runs: pd.DataFrame, out: pd.DataFrame, scope: list[str]) -> pd.DataFrame:
    """`config`: the params (besides rank, targets and seed) that vary within a `scope` and technique, e.g.
    `alpha=32, lr=0.001`, and always the options its module names in `title_options` (a peft method's type);
    `line_config`: the same without those that follow the rank (alpha = 2r in a rank sweep), so a rank sweep
    draws one line per remaining setting."""
    shown = ("method.r", "method.target_modules")  # they have columns of their own
    params = [c for c in runs.columns if c.startswith("params.") and not not_config(c[7:]) and c[7:] not in shown]
    labels = pd.DataFrame({"config": "", "line_config": ""}, index=runs.index, dtype=object)
    for (*_, technique), index in out.groupby([*scope, "technique"], dropna=False).groups.items():
        block = runs.loc[index, params].fillna("null").astype(str)
        named = {f"params.method.options.{name}" for name in _title_options(technique)}
        varying = [c for c in params if (block[c].nunique() > 1 or c in named)
                   and not (technique == REFERENCE and c[7:] in ADAPTER_PARAMS)]
        rank = out.loc[index, "r"].fillna(-1)
        free = [c for c in varying if block[c].groupby(rank).nunique().max() > 1]  # not a function of r
        labels.loc[index, "config"] = _join(block, varying)
        labels.loc[index, "line_config"] = _join(block, free)
    return labels


def _title_options(technique: str) -> tuple[str, ...]:
    known = TECHNIQUES.get(technique)
    return known.title_options if known else ()


def _join(block: pd.DataFrame, columns: list[str]) -> pd.Series | str:
    parts = [c[7:].removeprefix("method.") + "=" + block[c] for c in columns]
    if not parts:
        return ""
    return parts[0].str.cat(parts[1:], sep=", ") if len(parts) > 1 else parts[0]


def several(frame: pd.DataFrame) -> dict[str, bool]:
    """Which scopes the report spans more than one of: only those go into labels."""
    return {"several_models": frame["model"].nunique() > 1, "several_datasets": frame["dataset"].nunique() > 1,
            "several_devices": frame["device"].nunique() > 1,
            "several_fair": frame.loc[frame["fair_id"] != "", "fair_id"].nunique() > 1}  # runs outside one: no id


def labels(table: pd.DataFrame, *, several_models: bool, several_datasets: bool, several_devices: bool,
           several_fair: bool = False, drop: tuple[str, ...] = (), config: str = "config") -> pd.Series:
    """`lora r=16 qv`, prefixed with the data set, the device (`[cpu]`) and the model only when the report spans
    several; a fair comparison's final runs end in `tuned` (and the comparison's id when there are several)."""
    def label(row: pd.Series) -> str:
        parts = [row["dataset"]] if several_datasets else []
        parts += [f"[{row['device']}]"] if several_devices else []
        parts += [row["model"]] if several_models else []
        parts.append(row["technique"])
        parts += [f"r={row['r']:g}"] if pd.notna(row["r"]) and "r" not in drop else []
        parts += [row["target_modules"]] if row["target_modules"] and "target_modules" not in drop else []
        parts += [row[config]] if row[config] else []
        parts += [_stage(row["stage"], row["fair_id"] if several_fair else "")] if row["stage"] else []
        return " ".join(str(p) for p in parts)

    return table.apply(label, axis=1) if len(table) else pd.Series(dtype=object)


def _stage(stage: str, fair_id: str) -> str:
    word = "tuned" if stage == FINAL else f"fair/stage={stage}"
    return f"{word} ({fair_id})" if fair_id else word
