"""The fair comparison: each technique at its own learning rate, chosen on validation, reported on test.

`bench run experiment=fair-minilm` (any experiment with a `fair:` section) runs
  stage 1/3 (tune)    every technique at every rate of its own grid (`fair.grid`), one seed (`fair.tune_seed`), then
                      up to `fair.refine_rounds` rounds of finer rates around each best (`bench.run.fair_refine`);
  stage 2/3 (final)   every technique at the rate with its best validation accuracy, over `fair.seeds`;
  stage 3/3 (retime)  each chosen configuration once more, one cell at a time (`fair.retime`), so that its speed,
                      time and energy are measured with no other cell on the machine (tag `timing/shared=false`);
  then the report (`bench report`) of the comparison's experiment.
Each stage (and each round of finer rates) is an ordinary `bench run -m ...` Hydra sweep in a process of its own,
with its parent run, its cells each in a fresh process, and a failed cell recorded and passed over. This module
builds the sweeps' overrides, reads the store between them (`bench.run.fair_select`, validation only) and calls
the report; it schedules nothing itself. A Hydra grid is the same for every technique, so a tuning sweep sweeps an
index into each technique's own rates (`fair.rate=0,1,2`) and each cell turns it into its rate (`prepare_cell`).

The comparison's id (tag `fair/id`) is a hash of its composed config: the same command again reopens the same
stage sweeps and skips their finished cells, and a different comparison gets a different id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import LATER_DEFAULTS, ConfigError, config_hash
from bench.config.fair import FINAL, RETIME, TUNE, FairConfig

if TYPE_CHECKING:
    from bench.run.fair_refine import Neighbourhood

STAGE_NUMBERS = {TUNE: 1, FINAL: 2, RETIME: 3}
# Keys the comparison sets for every cell itself; on the command line they would break the design.
_OWN_KEYS = {"method": "fair.techniques", "seed": "fair.tune_seed and fair.seeds", "trainer.lr": "fair.grid"}
_ORCHESTRATOR_KEYS = ("fair.id", "fair.stage", "fair.rate", "fair.round", "fair.refine", "fair.chosen",
                      "fair.resolution", "fair.settled")
# What does not change any run's result, so does not make it another comparison.
_NOT_IDENTITY = ("tracker", "monitor", "output_dir", "force", "hydra")
_NOT_FAIR_IDENTITY = ("report", "retime")  # the report, and runs that only re-time a final configuration
# `fair` keys added since the id was pinned, at the values that give the comparison as it was before them: left out
# of the hash at those values, so such a comparison keeps its id and its finished runs. Finer rounds change which
# rates the final runs train at, so a comparison with them is another one (the report would mix their final runs).
_AS_BEFORE = {"refine_rounds": 0, "round": None, "refine": None, "resolution": None, "settled": None}


def stage_label(fair: FairConfig) -> str:
    """A stage's progress prefix: `stage 1/3`, `stage 1/3 round 2` (finer rates), `stage 2/2` without re-timing."""
    total = 3 if fair.retime else 2
    label = f"stage {STAGE_NUMBERS[fair.stage or TUNE]}/{total}"
    return f"{label} round {fair.round}" if fair.round else label


def prepare_cell(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A stage's cell: its `fair` section becomes its learning rate and its `fair/*` tags, and leaves the config
    (a run knows nothing of comparisons). Returns the config and the progress label's prefix, `stage 1/3: `."""
    fair = FairConfig.from_dict(raw.pop("fair"))
    method = raw["method"]["name"]
    if fair.stage is None or fair.id is None:
        raise ConfigError("a fair comparison runs its own sweeps: start it as `bench run experiment=<name>`, "
                          "without -m")
    tags: dict[str, Any] = {"fair/id": fair.id, "fair/stage": fair.stage}
    if fair.stage == TUNE and fair.round:
        lr = float((fair.refine or {})[method][fair.rate])
        tags["fair/round"] = fair.round
    elif fair.stage == TUNE:
        lr = float(fair.grid[method][fair.rate])
    else:
        lr = float((fair.chosen or {})[method])
        tags |= {"fair/lr_chosen": lr, "fair/chosen_on": "validation"}
        if method in (fair.resolution or {}):
            tags["fair/rate_resolution"] = fair.resolution[method]  # type: ignore[index]
        if method in (fair.settled or {}):
            tags["fair/rate_settled"] = str(bool(fair.settled[method])).lower()  # type: ignore[index]
    raw["trainer"]["lr"] = lr
    raw["tracker"]["tags"] = {**(raw["tracker"].get("tags") or {}), **tags}
    return raw, f"{stage_label(fair)}: "


def comparison_id(composed: dict[str, Any]) -> str:
    """The comparison's id: a hash of everything in its config that changes a result."""
    values = {key: value for key, value in composed.items() if key not in _NOT_IDENTITY}
    values["fair"] = {key: value for key, value in values["fair"].items() if key not in _NOT_FAIR_IDENTITY
                      and not (key in _AS_BEFORE and value == _AS_BEFORE[key])}
    for section, later in LATER_DEFAULTS.items():  # keys added since, at the values the comparison ran with
        if isinstance(values.get(section), dict):
            values[section] = {key: value for key, value in values[section].items()
                               if not (key in later and value == later[key])}
    if isinstance(values.get("method"), dict) and not values["method"].get("options"):
        # as before techniques declared options: a comparison without any keeps the id it had, and its runs
        values["method"] = {key: value for key, value in values["method"].items() if key != "options"}
    return config_hash(values)


def check_overrides(overrides: list[str]) -> None:
    """Reject what would undo the design: a technique, seed or rate set by hand, a sweep (`a=1,2`), which would
    put several configurations behind one choice, or a key only the orchestrator sets."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")]):
        key = override.key_or_group
        if key in _OWN_KEYS:
            raise ConfigError(f"{key}= is set by the fair comparison for each cell; change {_OWN_KEYS[key]} instead")
        if key in _ORCHESTRATOR_KEYS:
            raise ConfigError(f"{key} is set by the fair comparison itself")
        if override.is_sweep_override():
            raise ConfigError(f"{override.input_line}: a fair comparison sweeps techniques, rates and seeds itself; "
                              "run one comparison per value instead")


def tune_overrides(base: list[str], fair: FairConfig) -> list[str]:
    """Stage 1's grid: every technique x every index into its grid, one seed."""
    rates = ",".join(str(index) for index in range(fair.rates_per_technique))
    return [*base, f"fair.stage={TUNE}", f"method={','.join(fair.techniques)}", f"fair.rate={rates}",
            f"seed={fair.tune_seed}", "-m"]


def refine_overrides(base: list[str], fair: FairConfig, rates: dict[str, list[float]], round_: int) -> list[str]:
    """A round of finer rates: each technique that needs one x its two new rates, the tuning seed."""
    listed = ",".join(f"{technique}:[{','.join(map(repr, new))}]" for technique, new in rates.items())
    return [*base, f"fair.stage={TUNE}", f"fair.round={round_}", f"method={','.join(rates)}",
            f"fair.refine={{{listed}}}", "fair.rate=0,1", f"seed={fair.tune_seed}", "-m"]


def chosen_overrides(base: list[str], fair: FairConfig, near: dict[str, Neighbourhood], stage: str, *,
                     launcher: dict[str, Any]) -> list[str]:
    """Stage 2 (final): every technique with a chosen rate x every seed. Stage 3 (retime): the same with the first
    seed, one cell at a time: `hydra.launcher.n_jobs=1` where the `launcher` (the composed `hydra.launcher`) runs
    several (joblib); Hydra's basic launcher runs them one after another already."""
    chosen = ",".join(f"{technique}:{point.best.lr!r}" for technique, point in near.items())
    resolution = ",".join(f"{technique}:{float(f'{point.resolution:.3g}')!r}" for technique, point in near.items()
                          if point.resolution is not None)
    settled = ",".join(f"{technique}:{str(point.settled).lower()}" for technique, point in near.items())
    seeds = fair.seeds if stage == FINAL else fair.seeds[:1]
    alone = ["hydra.launcher.n_jobs=1"] if stage == RETIME and "n_jobs" in launcher else []
    kept = base if stage == FINAL else [o for o in base if not o.lstrip("+~").startswith("hydra.launcher.")]
    return [*kept, f"fair.stage={stage}", f"method={','.join(near)}", f"fair.chosen={{{chosen}}}",
            *([f"fair.resolution={{{resolution}}}"] if resolution else []), f"fair.settled={{{settled}}}",
            f"seed={','.join(map(str, seeds))}", *alone, "-m"]


def run_fair(overrides: list[str], composed: dict[str, Any]) -> int:
    """`bench run experiment=<fair experiment> [overrides]`: the stages, the choice between them, the report.
    `composed`: the config composed from `overrides`, resolved. Exit status: 0 when the final stage ran."""
    from bench.run.fair_console import plan_line, say_chosen, warn_if_shared
    from bench.run.fair_refine import neighbourhoods
    from bench.tracking.store import resolve_uri

    fair = FairConfig.from_dict(composed["fair"])
    check_overrides(overrides)
    if composed.get("dry_run"):
        raise ConfigError("dry_run=true trains nothing, so there is no validation accuracy to choose a rate by; "
                          "`bench plan` gives the memory plan of each technique")
    fair_id = comparison_id(composed)
    uri, experiment = resolve_uri(composed["tracker"].get("uri")), str(composed["tracker"]["experiment"])
    warn_if_shared(uri, experiment, fair_id)
    # quoted: Hydra reads an unquoted id such as 535503e13006 as a number (here, infinity)
    base = [*(o for o in overrides if not o.startswith("-")), f"fair.id='{fair_id}'"]
    print(f"fair comparison {fair_id}: {plan_line(fair)}; experiment '{experiment}' at {uri}", flush=True)
    status, results = _tune(base, fair, fair_id, uri=uri, experiment=experiment)
    if status not in (0, 1):  # 1: every cell failed, which is on record; anything else stops the comparison
        return status
    found = neighbourhoods(results)
    near = {technique: found[technique] for technique in fair.techniques if technique in found}
    say_chosen(fair, results, near)
    for stage in (FINAL, RETIME) if fair.retime else (FINAL,):
        if near:
            launcher = (composed.get("hydra") or {}).get("launcher") or {}
            status = _stage(chosen_overrides(base, fair, near, stage, launcher=launcher), stage, fair=fair, uri=uri,
                            experiment=experiment)
            if status not in (0, 1):
                return status
    if fair.report:
        _write_report(uri, experiment, fair_id)
    return 0 if near else 1


def _tune(base: list[str], fair: FairConfig, fair_id: str, *, uri: str, experiment: str) -> tuple[int, list[Any]]:
    """Stage 1: the grid, then rounds of finer rates (`bench.run.fair_refine`: every technique gets the first, an
    unsettled one the later ones, up to `fair.refine_rounds`). The stage's status and the finished tuning results."""
    from bench.run.fair_refine import finer_rates
    from bench.run.fair_select import tune_results

    status = _stage(tune_overrides(base, fair), TUNE, fair=fair, uri=uri, experiment=experiment)
    if status not in (0, 1):
        return status, []
    results = tune_results(uri, experiment, fair_id)
    for round_ in range(1, fair.refine_rounds + 1):
        rates = finer_rates(results, techniques=fair.techniques, first=round_ == 1)
        if not rates:
            break
        label = FairConfig.from_dict({**vars(fair), "round": round_})
        status = _stage(refine_overrides(base, fair, rates, round_), TUNE, fair=label, uri=uri,
                        experiment=experiment)
        if status not in (0, 1):
            return status, results
        if status == 1:  # every cell of the round failed: another round would ask for the same rates again
            break
        results = tune_results(uri, experiment, fair_id)
    return 0, results


def _stage(overrides: list[str], stage: str, *, fair: FairConfig, uri: str, experiment: str) -> int:
    """Run a stage (`fair`: its label); when it is interrupted, its cells' runs end KILLED even where joblib's
    shutdown killed their processes (with SIGKILL, before they could close them), rather than waiting for the next
    run to notice."""
    label = stage_label(FairConfig.from_dict({**vars(fair), "stage": stage}))
    print(f"{label} ({stage}): bench run {' '.join(overrides)}", flush=True)
    try:
        return _run_stage(overrides, stage)
    except KeyboardInterrupt:
        import mlflow

        from bench.tracking.store import close_stale_runs, retrying

        client = mlflow.MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            retrying(lambda: close_stale_runs(client, found.experiment_id))
        raise


def _run_stage(overrides: list[str], stage: str) -> int:
    """`bench run <overrides>` in a process of its own. It leads a process group of its own, so an interrupt
    reaches it from here alone, once: a Ctrl-C or SIGTERM here becomes one SIGINT to the whole group (the stage,
    its joblib workers and their cells, as a terminal's Ctrl-C reaches a plain sweep): the running cells close
    their runs KILLED, the stage its parent run, and then this raises the interrupt on."""
    command = [sys.executable, "-m", "bench.cli", "run", *overrides]
    stage_process = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        return stage_process.wait()
    except KeyboardInterrupt:
        with suppress(ProcessLookupError):  # the group may have ended on its own meanwhile
            os.killpg(stage_process.pid, signal.SIGINT)
        while True:
            try:
                stage_process.wait()
                break
            except KeyboardInterrupt:  # a second Ctrl-C must not cut the stage's cleanup short
                continue
        raise


def _die_with_parent() -> None:
    """Linux: the stage process gets SIGTERM when this one dies (SIGKILL), so no comparison trains on orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _write_report(uri: str, experiment: str, fair_id: str) -> None:
    """`bench report` on the comparison's experiment, into reports/fair-<id>/; says where it is."""
    from bench.report.cli import report_command

    folder = Path("reports") / f"fair-{fair_id}"
    status = report_command(["--experiment", experiment, "--tracking-uri", uri, "--out", str(folder)])
    if status == 0:
        print(f"fair comparison {fair_id} done: report at {(folder / 'index.html').resolve()}", flush=True)
    else:
        print(f"fair comparison {fair_id} done, but the report failed (exit {status}); "
              f"retry: bench report --experiment {experiment} --out {folder}", file=sys.stderr, flush=True)
