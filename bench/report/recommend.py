"""What to pick: for each memory budget, the configuration most accurate on validation that fits it, what it costs
and what it gives up against the best overall. Pure pandas over the headline table and its runs, like `analyse`.

A budget is a card `bench plan` knows (`bench.core.cards`) or a size (`bench report --budget 24GiB,80GiB`). A
configuration fits by the memory measured on that card (a bare size: on any GPU), the most complete figure its runs
logged (the NVML process peak, else reserved, else the allocator's peak, else the tensor peak); where its runs ran on
another device, by the plan they logged, labelled so. The choice is made on validation (eval/accuracy); test is only
reported. A candidate is indistinguishable from the most accurate one when the 95 % interval of their difference on
validation (paired over seeds where they match, Welch otherwise, as everywhere in the report) holds zero, or, where
runs give no such interval (one seed), when their own intervals overlap (one run's: the Wilson interval of its
validation accuracy over its rows); among those the cheaper wins: fewer
seconds per 1,000 steps timed alone, else less memory, and the sentence names the figure that decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.core.cards import CARDS, GIB, Card, SizeError, parse_size
from bench.core.intervals import NONE, difference, wilson
from bench.report.compare import best_on_validation, counted
from bench.report.formats import percent, size
from bench.report.memory import UNKNOWN_DEVICE
from bench.report.render import delta_text

# The measured figure a budget is judged by, most complete first (friendly column → metric name), and the plan's.
MEASURED = {"peak_nvml_process_bytes": "mem/peak_nvml_process_bytes", "peak_reserved_bytes": "mem/peak_reserved_bytes",
            "allocator_peak_bytes": "mem/allocator_peak_bytes", "tensor_peak_bytes": "mem/tensor_peak_bytes"}
PLANNED = {"plan_process_bytes": "plan/process_bytes", "plan_reserved_bytes": "plan/reserved_bytes",
           "plan_allocator_peak_bytes": "plan/allocator_peak_bytes", "plan_peak_bytes": "plan/peak_bytes"}
CUDA_ONLY = {"plan_process_bytes", "plan_reserved_bytes"}  # a CPU run's process plan holds no CUDA context
SHOWN = 3  # rivals a sentence names before it counts the rest


@dataclass(frozen=True)
class Budget:
    """A memory budget: how sentences name it, its bytes, and the card whose runs count as measured on it."""

    name: str
    bytes: int
    card: Card | None = None


def budgets(text: str | None) -> list[Budget]:
    """`--budget`: sizes (`24GiB`) or card names (`h100`), comma-separated; none given: every card bench knows."""
    if text is None:
        return [Budget(f"{c.memory_bytes / GIB:g} GiB ({c.title})", c.memory_bytes, c) for c in CARDS.values()]
    found = []
    for item in (part.strip() for part in text.split(",")):
        if item.lower() in CARDS:
            c = CARDS[item.lower()]
            found.append(Budget(f"{c.memory_bytes / GIB:g} GiB ({c.title})", c.memory_bytes, c))
            continue
        try:
            found.append(Budget(size(parse_size(item, option="--budget")), parse_size(item, option="--budget")))
        except SizeError:
            raise SizeError(f"--budget item {item!r} is neither a size nor a card; write sizes such as 24GiB or "
                            f"512MiB, or cards: {', '.join(CARDS)}") from None
    return found


@dataclass(frozen=True)
class Pick:
    """A budget's recommendation (or several budgets' with the same outcome, such as two 24 GiB cards judged by one
    plan): the row chosen (None when nothing fits), its rivals, and what the sentence says after the budgets."""

    budgets: tuple[Budget, ...]
    dataset: str
    chosen: pd.Series | None
    tied: tuple[str, ...]  # labels of the candidates indistinguishable from the best on validation (chosen included)
    decided_by: str  # the figure that chose among them; "" when one candidate stood alone
    body: str

    @property
    def sentence(self) -> str:
        return f"{', '.join(b.name for b in self.budgets)}: {self.body}"


def _gpu(device: str) -> bool:
    return device not in ("cpu", UNKNOWN_DEVICE)


def _on_budget_device(device: str, budget: Budget) -> bool:
    """Whether runs on `device` measured memory the budget can take as is: its card's, or any GPU for a bare size."""
    return budget.card.matches(device) if budget.card else _gpu(device)


def figure(row: pd.Series, budget: Budget) -> tuple[float, str, bool]:
    """(bytes, metric name, measured?) a configuration is judged by under `budget`; NaN where it logged none."""
    measured = _on_budget_device(str(row["device"]), budget)
    names = MEASURED if measured else {k: v for k, v in PLANNED.items() if _gpu(str(row["device"])) or
                                       k not in CUDA_ONLY}
    for column, metric in names.items():
        value = row.get(column)
        if value is not None and not pd.isna(value):
            return float(value), metric, measured
    return math.nan, "", measured


def recommend(table: pd.DataFrame, runs: pd.DataFrame, chosen_budgets: list[Budget], *,
              price_per_hour: float | None) -> list[Pick]:
    """One Pick per data set and budget (data sets in the table's order)."""
    picks, by_group = [], {group: rows for group, rows in counted(runs).groupby("group", sort=False)}
    for dataset, rows in table.groupby("dataset", sort=False):
        rows = rows[rows["accuracy_mean"].notna()]
        if rows.empty:
            continue
        best = best_on_validation(rows, ["dataset"]).iloc[0]
        for budget in chosen_budgets:
            found = _pick(rows, by_group, best, budget, str(dataset), price_per_hour)
            same = next((i for i, p in enumerate(picks) if (p.dataset, p.body) == (found.dataset, found.body)), None)
            if same is None:
                picks.append(found)
            else:  # the same outcome in the same words: one sentence names both budgets
                picks[same] = Pick((*picks[same].budgets, budget), *list(vars(picks[same]).values())[1:])
    return picks


def _pick(rows: pd.DataFrame, by_group: dict[int, pd.DataFrame], best: pd.Series, budget: Budget, dataset: str,
          price: float | None) -> Pick:
    judged = [figure(row, budget) for _, row in rows.iterrows()]
    rows = rows.assign(fit_bytes=[j[0] for j in judged], fit_metric=[j[1] for j in judged],
                       fit_measured=[j[2] for j in judged])
    known = rows[rows["fit_bytes"].notna()]
    if known.empty:
        return Pick((budget,), dataset, None, (), "", "no configuration logged a memory figure to judge it by "
                    "(mem/peak_* on the card, or plan/* from `bench plan`'s engine).")
    fits = known[known["fit_bytes"] <= budget.bytes]
    if fits.empty:
        small = known.loc[known["fit_bytes"].idxmin()]
        return Pick((budget,), dataset, None, (), "", f"nothing fits; the smallest, {small['label']}, needs "
                    f"{size(small['fit_bytes'])} ({_basis(small)}).")
    ranked = fits.sort_values("accuracy_mean", ascending=False, kind="stable")
    top = ranked.iloc[0]
    tied = ranked[[_indistinguishable(top, row, by_group) for _, row in ranked.iterrows()]]
    chosen, decided = _cheapest(tied) if len(tied) > 1 else (top, "")
    body = _sentence(budget, chosen, tied, decided, best, by_group, price)
    return Pick((budget,), dataset, chosen, tuple(tied["label"]), decided, body)


def _bounds(row: pd.Series, runs: pd.DataFrame) -> tuple[float, float]:
    """The validation interval over seeds; for one run, the Wilson 95 % interval of its accuracy as a proportion of
    its validation rows (`data/eval_rows`): one seed still scored every row; a point where the rows are unknown."""
    if not pd.isna(row["accuracy_ci95"]):
        return row["accuracy_low"], row["accuracy_high"]
    p = row["accuracy_mean"]
    rows = pd.to_numeric(runs["eval_rows"], errors="coerce").max() if "eval_rows" in runs else math.nan
    if pd.isna(rows) or rows <= 0:
        return p, p
    return wilson(p, rows)


def _indistinguishable(top: pd.Series, row: pd.Series, by_group: dict[int, pd.DataFrame]) -> bool:
    """Whether validation cannot tell `row` from `top`: their difference's interval holds zero; without one (a
    single seed), their own intervals overlap. `by_group`: each configuration's counted runs."""
    if row["group"] == top["group"]:
        return True
    empty = pd.DataFrame(columns=["seed", "accuracy"])
    found = difference(by_group.get(top["group"], empty), by_group.get(row["group"], empty), "accuracy")
    if not math.isnan(found.low):
        return bool(found.low <= 0 <= found.high)
    (a_low, a_high) = _bounds(top, by_group.get(top["group"], empty))
    (b_low, b_high) = _bounds(row, by_group.get(row["group"], empty))
    return bool(a_low <= b_high and b_low <= a_high)


def _cheapest(tied: pd.DataFrame) -> tuple[pd.Series, str]:
    """Among indistinguishable candidates: the fewest seconds per 1,000 steps when all were timed alone on one
    device (a speed comparison needs both), else the most tokens/s so timed, else the least memory by the figure the
    budget judged."""
    one_device = tied["device"].nunique() == 1
    if one_device and tied["alone_s_per_1k_steps"].notna().all():
        return tied.loc[tied["alone_s_per_1k_steps"].idxmin()], "time per 1,000 steps"
    if one_device and tied["alone_tokens_per_s"].notna().all():
        return tied.loc[tied["alone_tokens_per_s"].idxmax()], "tokens/s"
    return tied.loc[tied["fit_bytes"].idxmin()], "memory"


def _basis(row: pd.Series) -> str:
    """`mem/peak_reserved_bytes measured on NVIDIA H100` or `by the plan (plan/peak_bytes), runs on cpu`."""
    if row["fit_measured"]:
        return f"{row['fit_metric']} measured on {row['device']}"
    return f"by the plan ({row['fit_metric']}), its runs on {row['device']}"


def _accuracy(row: pd.Series) -> str:
    val = f"val {percent(row['accuracy_mean'])} %" + (
        f" ± {percent(row['accuracy_ci95'])}" if pd.notna(row["accuracy_ci95"]) else f" (n={row['n']})")
    if pd.isna(row.get("test_accuracy_mean")):
        return val
    test = f"test {percent(row['test_accuracy_mean'])} %" + (
        f" ± {percent(row['test_accuracy_ci95'])}" if pd.notna(row["test_accuracy_ci95"]) else "")
    return f"{val}, {test}"


def _costs(row: pd.Series, price: float | None) -> str:
    """What training it costs, from runs timed alone only, and what it ships."""
    ships = [f"ships {size(row['adapter_bytes'])}"] if pd.notna(row.get("adapter_bytes")) else []
    if row["timing"] != "alone":
        why = "its runs shared the machine" if row["timing"] == "shared" else "its runs carry no timing/shared tag"
        return ", ".join([f"its speed is not compared ({why})", *ships])
    seconds, parts = row.get("alone_s_per_1k_steps"), []
    if pd.notna(seconds):
        parts.append(f"{seconds:,.1f} s per 1,000 steps")
    if pd.notna(row.get("alone_tokens_per_s")):
        parts.append(f"{row['alone_tokens_per_s']:,.0f} tokens/s")
    if price is not None and pd.notna(seconds):
        parts.append(f"${seconds / 3600 * price:,.4f} per 1,000 steps at ${price:g}/h")
    elif price is not None and pd.notna(row.get("alone_train_time_s")):
        parts.append(f"${row['alone_train_time_s'] / 3600 * price:,.4f} per run at ${price:g}/h")
    timed = f" (timed alone on {row['device']})" if parts else ""
    return ", ".join(parts) + timed + (", " if parts and ships else "") + ", ".join(ships)


def _against_best(row: pd.Series, best: pd.Series, by_group: dict[int, pd.DataFrame]) -> str:
    """What the pick gives up against the best overall: Δ accuracy (test where logged) with its interval, memory
    and time ratios where both sides have them."""
    if row["group"] == best["group"]:
        return "it is the best overall on validation"
    mine, theirs = by_group.get(row["group"]), by_group.get(best["group"])
    split = "test_accuracy" if pd.notna(row.get("test_accuracy_mean")) and pd.notna(best.get("test_accuracy_mean")) \
        else "accuracy"
    found = difference(mine, theirs, split) if mine is not None and theirs is not None else NONE
    parts = [f"Δ {'test' if split == 'test_accuracy' else 'val'} {found.delta * 100:+.2f} pp, 95 % interval "
             f"{delta_text(found.low, found.high, found.method)}" if not np.isnan(found.delta) else ""]
    memory = row["fit_bytes"] / best["fit_bytes"] if pd.notna(best.get("fit_bytes")) else math.nan
    parts.append(f"memory {memory:.2f}×" if pd.notna(memory) else "")
    parts.append(_speed_ratio(row, best))
    return f"against the best overall, {best['label']}: " + ", ".join(p for p in parts if p)


def _speed_ratio(row: pd.Series, best: pd.Series) -> str:
    """`time 0.71×` (seconds per 1,000 steps), else `tokens/s 1.40×`, both sides timed alone on one device."""
    if row["device"] != best["device"]:
        return "speed not compared (another device)"
    for column, name in (("alone_s_per_1k_steps", "time"), ("alone_tokens_per_s", "tokens/s")):
        ratio = row.get(column) / best.get(column)
        if pd.notna(ratio):
            return f"{name} {ratio:.2f}×"
    return "speed not compared (not both timed alone)"


def _sentence(budget: Budget, row: pd.Series, tied: pd.DataFrame, decided: str, best: pd.Series,
              by_group: dict[int, pd.DataFrame], price: float | None) -> str:
    best = best.copy()
    best["fit_bytes"], *_ = figure(best, budget)
    head = (f"{row['label']} ({_accuracy(row)}; fits at {size(row['fit_bytes'])}, {_basis(row)}); "
            f"{_costs(row, price)}; {_against_best(row, best, by_group)}.")
    if not decided:
        return head
    value = {"time per 1,000 steps": lambda r: f"{r['alone_s_per_1k_steps']:,.1f} s",
             "tokens/s": lambda r: f"{r['alone_tokens_per_s']:,.0f} tokens/s",
             "memory": lambda r: size(r["fit_bytes"])}[decided]
    rivals = [f"{r['label']} ({value(r)})" for _, r in tied.iterrows() if r["group"] != row["group"]]
    named = ", ".join(rivals[:SHOWN]) + (f" and {len(rivals) - SHOWN} more" if len(rivals) > SHOWN else "")
    return (f"{head} Indistinguishable on validation from {named}, so the cheaper is recommended: {decided} "
            f"decided ({value(row)}).")
