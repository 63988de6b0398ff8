"""Which speed figures may be compared: those of runs timed alone. Pure pandas, like `analyse`.

A sweep's cells can train at the same time on one machine; their tokens/s, training time and energy then measure
the sharing as much as the technique. `bench run` tags every run of a sweep `timing/shared`: `false` when its
training overlapped no other cell of the sweep, `true` when it did; older runs carry no tag (unknown). A fair
comparison may re-time its chosen configurations alone at the end (`fair/stage=retime`, `timing/shared=false`):
those runs add timing to the final configuration they repeat and nothing else. Every ratio, recommendation cost
and published-speed check in the report uses only the `alone_*` figures made here; the plain means stay in the
tables as logged, with a `timing` column that says which kind they are.
"""

from __future__ import annotations

import pandas as pd

RETIME = "retime"  # fair/stage of a run that re-times a final configuration alone
ALONE, SHARED, UNKNOWN = "alone", "shared", "unknown"
# Friendly run column → the figure timed alone (`alone_<name>`): what depends on how busy the machine was.
SPEED = ("tokens_per_s", "train_time_s", "energy_j", "s_per_1k_steps")
MATCH = ["fair_id", "dataset", "model", "device", "technique", "r", "target_modules"]  # a retime run's final config


def state(tag: pd.Series) -> pd.Series:
    """`alone`, `shared` or `unknown` per run, from its `timing/shared` tag (blank on runs from before it)."""
    text = tag.fillna("").astype(str).str.strip().str.lower()
    return text.map({"false": ALONE, "true": SHARED}).fillna(UNKNOWN)


def per_run(runs: pd.DataFrame) -> pd.Series:
    """Seconds per 1,000 optimizer steps of each run: train/time_s over train/steps."""
    steps = runs["train_steps"].where(runs["train_steps"] > 0)
    return runs["train_time_s"] / steps * 1000


def timed_runs(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The finished runs that time a headline configuration: its own, and the re-timing runs of a final one, as rows
    of `group`, `seed`, `timing` and the SPEED figures."""
    done = runs[(runs["status"] == "FINISHED") & ~runs["superseded"]]
    own = done[done["stage"] != RETIME][["group", "seed", "timing", *SPEED]]
    return pd.concat([own, _retimed(done, table)], ignore_index=True)


def alone_figures(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per headline `group`: `timing` (alone, shared or unknown: alone when some finished run of it, or a run
    re-timing it, was timed alone), `alone_n` and the mean of each SPEED figure over those runs (`alone_<name>`)."""
    timed = timed_runs(runs, table)
    alone = timed[timed["timing"] == ALONE]
    figures = alone.groupby("group")[list(SPEED)].mean().add_prefix("alone_")
    figures["alone_n"] = alone.groupby("group").size()
    states = timed.groupby("group")["timing"].agg(_group_state)
    out = pd.DataFrame({"timing": states}).join(figures)
    out = out.reindex(table["group"])
    out["timing"] = out["timing"].fillna(UNKNOWN)
    out["alone_n"] = out["alone_n"].fillna(0).astype(int)
    return out


def _retimed(done: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Re-timing runs as rows of the final configuration they repeat (same comparison, model, device, technique,
    rank and targets); one that matches none is left out."""
    retime = done[done["stage"] == RETIME]
    finals = table[table["stage"] == "final"][[*MATCH, "group"]]
    if retime.empty or finals.empty:
        return pd.DataFrame(columns=["group", "seed", "timing", *SPEED])
    keyed = retime.drop(columns="group").astype({"r": "float64"})
    matched = keyed.merge(finals.astype({"r": "float64"}), on=MATCH, how="inner")
    return matched[["group", "seed", "timing", *SPEED]]


def _group_state(states: pd.Series) -> str:
    found = set(states)
    return ALONE if ALONE in found else SHARED if SHARED in found else UNKNOWN


def label(timing: str, n: int) -> str:
    """How a table writes a configuration's timing: `alone (3 runs)`, `shared`, `unknown`."""
    return f"{ALONE} ({n} run{'s' if n != 1 else ''})" if timing == ALONE else timing


def note(table: pd.DataFrame) -> str:
    """One sentence on what the speed comparisons rest on, or why there are none."""
    counts = table["timing"].value_counts()
    alone, shared, unknown = (int(counts.get(k, 0)) for k in (ALONE, SHARED, UNKNOWN))
    base = ("Speed, time and energy are compared only between runs timed alone (timing/shared=false): a run that "
            "trained while another cell of its sweep did measures the sharing as much as the technique.")
    if alone == 0:
        why = []
        if shared:
            why.append(f"{shared} configuration{'s' if shared != 1 else ''} trained beside other cells")
        if unknown:
            why.append(f"{unknown} carr{'y' if unknown != 1 else 'ies'} no timing/shared tag (recorded before bench "
                       "marked it)")
        return f"{base} No configuration was timed alone ({'; '.join(why)}), so every speed comparison is left out."
    rest = [f"{shared} shared" if shared else "", f"{unknown} unknown" if unknown else ""]
    left = ", ".join(p for p in rest if p)
    return f"{base} {alone} configuration{'s' if alone != 1 else ''} timed alone" + (
        f"; the others ({left}) show their figures but are compared with nothing." if left else ".")
