"""The fair comparison: each technique at its own learning rate, chosen on validation, reported on test.

`bench run experiment=fair-minilm` (any experiment with a `fair:` section) runs
  stage 1/2 (tune)   every technique at every rate of its own grid (`fair.grid`), one seed (`fair.tune_seed`);
  stage 2/2 (final)  every technique at the rate with its best validation accuracy, over `fair.seeds`;
  then the report (`bench report`) of the comparison's experiment.
Each stage is an ordinary `bench run -m ...` Hydra sweep in a process of its own, with its parent run, its
cells each in a fresh process, and a failed cell recorded and passed over. This module builds the two sweeps'
overrides, reads the store between them (`bench.run.fair_select`, validation only) and calls the report; it
schedules nothing itself. A Hydra grid is the same for every technique, so stage 1 sweeps an index into each
technique's own grid (`fair.rate=0,1,2`) and each cell turns it into its rate (`prepare_cell`).

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
from typing import Any

from bench.config import ConfigError, config_hash
from bench.config.fair import FINAL, TUNE, FairConfig

STAGE_LABELS = {TUNE: "stage 1/2", FINAL: "stage 2/2"}
# Keys the comparison sets for every cell itself; on the command line they would break the design.
_OWN_KEYS = {"method": "fair.techniques", "seed": "fair.tune_seed and fair.seeds", "trainer.lr": "fair.grid"}
_ORCHESTRATOR_KEYS = ("fair.id", "fair.stage", "fair.rate", "fair.chosen")
# What does not change any run's result, so does not make it another comparison.
_NOT_IDENTITY = ("tracker", "monitor", "output_dir", "force", "hydra")


def prepare_cell(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A stage's cell: its `fair` section becomes its learning rate and its `fair/*` tags, and leaves the config
    (a run knows nothing of comparisons). Returns the config and the progress label's prefix, `stage 1/2: `."""
    fair = FairConfig.from_dict(raw.pop("fair"))
    method = raw["method"]["name"]
    if fair.stage is None or fair.id is None:
        raise ConfigError("a fair comparison runs its own sweeps: start it as `bench run experiment=<name>`, "
                          "without -m")
    tags = {"fair/id": fair.id, "fair/stage": fair.stage}
    if fair.stage == TUNE:
        lr = float(fair.grid[method][fair.rate])
    else:
        lr = float((fair.chosen or {})[method])
        tags |= {"fair/lr_chosen": lr, "fair/chosen_on": "validation"}
    raw["trainer"]["lr"] = lr
    raw["tracker"]["tags"] = {**(raw["tracker"].get("tags") or {}), **tags}
    return raw, f"{STAGE_LABELS[fair.stage]}: "


def comparison_id(composed: dict[str, Any]) -> str:
    """The comparison's id: a hash of everything in its config that changes a result."""
    values = {key: value for key, value in composed.items() if key not in _NOT_IDENTITY}
    values["fair"] = {key: value for key, value in values["fair"].items() if key != "report"}
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
    """Stage 1's sweep: every technique x every index into its grid, one seed."""
    rates = ",".join(str(index) for index in range(fair.rates_per_technique))
    return [*base, f"fair.stage={TUNE}", f"method={','.join(fair.techniques)}", f"fair.rate={rates}",
            f"seed={fair.tune_seed}", "-m"]


def final_overrides(base: list[str], fair: FairConfig, chosen: dict[str, float]) -> list[str]:
    """Stage 2's sweep: every technique with a chosen rate x every seed."""
    rates = ",".join(f"{technique}:{lr!r}" for technique, lr in chosen.items())
    return [*base, f"fair.stage={FINAL}", f"method={','.join(chosen)}", f"fair.chosen={{{rates}}}",
            f"seed={','.join(map(str, fair.seeds))}", "-m"]


def run_fair(overrides: list[str], composed: dict[str, Any]) -> int:
    """`bench run experiment=<fair experiment> [overrides]`: both stages, the choice between them, the report.
    `composed`: the config composed from `overrides`, resolved. Exit status: 0 when the final stage ran."""
    from bench.run.fair_select import choose_rates, scores_table, tune_results
    from bench.tracking.store import resolve_uri

    fair = FairConfig.from_dict(composed["fair"])
    check_overrides(overrides)
    if composed.get("dry_run"):
        raise ConfigError("dry_run=true trains nothing, so there is no validation accuracy to choose a rate by; "
                          "`bench plan` gives the memory plan of each technique")
    fair_id = comparison_id(composed)
    uri, experiment = resolve_uri(composed["tracker"].get("uri")), str(composed["tracker"]["experiment"])
    _warn_if_shared(uri, experiment, fair_id)
    base = [*(o for o in overrides if not o.startswith("-")), f"fair.id={fair_id}"]
    print(f"fair comparison {fair_id}: {len(fair.techniques)} techniques, stage 1/2 tunes each on validation over "
          f"{fair.rates_per_technique} rates with seed {fair.tune_seed} "
          f"({len(fair.techniques) * fair.rates_per_technique} cells), stage 2/2 runs each at its best rate with "
          f"seeds {fair.seeds} ({len(fair.techniques) * len(fair.seeds)} cells); experiment '{experiment}' at {uri}",
          flush=True)
    status = _stage(tune_overrides(base, fair), TUNE, uri=uri, experiment=experiment)
    if status not in (0, 1):  # 1: every cell failed, which is on record; anything else stops the comparison
        return status
    results = tune_results(uri, experiment, fair_id)
    found = choose_rates(results)
    chosen = {technique: found[technique] for technique in fair.techniques if technique in found}
    print(f"stage 1/2 done: validation accuracy (eval/accuracy) by rate, * = chosen\n"
          f"{scores_table(results, chosen, fair.techniques)}", flush=True)
    _warn_at_edges(fair, chosen)
    left_out = [technique for technique in fair.techniques if technique not in chosen]
    if left_out:
        print(f"warning: no finished tuning run for {', '.join(left_out)}: left out of stage 2/2",
              file=sys.stderr, flush=True)
    if chosen:
        status = _stage(final_overrides(base, fair, chosen), FINAL, uri=uri, experiment=experiment)
        if status not in (0, 1):
            return status
    if fair.report:
        _write_report(uri, experiment, fair_id)
    return 0 if chosen else 1


def _warn_at_edges(fair: FairConfig, chosen: dict[str, float]) -> None:
    """A best rate at the end of its grid may not be the best rate: say which, so the grid can be widened."""
    for technique, lr in chosen.items():
        rates = [float(rate) for rate in fair.grid[technique]]
        if len(rates) > 1 and lr in (min(rates), max(rates)):
            side = "largest" if lr == max(rates) else "smallest"
            print(f"warning: {technique}'s best rate, {lr:.3g}, is the {side} of its grid; a better one may lie "
                  f"beyond it (widen fair.grid.{technique})", file=sys.stderr, flush=True)


def _warn_if_shared(uri: str, experiment: str, fair_id: str) -> None:
    """The report covers the whole experiment: say so when it already holds another comparison's runs."""
    import mlflow

    from bench.tracking.store import check_reachable

    check_reachable(uri)
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return
    others = client.search_runs([found.experiment_id], f"tags.`fair/id` != '{fair_id}'", max_results=1)
    if others:
        print(f"warning: experiment '{experiment}' already holds runs of another fair comparison "
              f"({others[0].data.tags.get('fair/id')}), and the report covers the whole experiment; for a report of "
              "this comparison alone, give it an experiment of its own: tracker.experiment=<name>",
              file=sys.stderr, flush=True)


def _stage(overrides: list[str], stage: str, *, uri: str, experiment: str) -> int:
    """Run a stage; when it is interrupted, its cells' runs end KILLED even where joblib's shutdown killed their
    processes (with SIGKILL, before they could close them), rather than waiting for the next run to notice."""
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
    print(f"{STAGE_LABELS[stage]} ({stage}): bench run {' '.join(overrides)}", flush=True)
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
        print(f"fair comparison {fair_id} done: report at {folder / 'index.html'}", flush=True)
    else:
        print(f"fair comparison {fair_id} done, but the report failed (exit {status}); "
              f"retry: bench report --experiment {experiment} --out {folder}", file=sys.stderr, flush=True)
