"""What the MLflow UI shows of bench's runs: the experiment's kind, each run's name and description, the links.

MLflow 3's UI opens an experiment on its GenAI pages (overview, traces, sessions, judges) or, for model training,
on its runs table. Earlier MLflow 3 UIs chose by the experiment's `mlflow.experimentKind` tag, and bench tags every
experiment it creates or writes to `custom_model_development`. The UI of MLflow 3.17 chooses by a switch at the top
of its sidebar instead (GenAI | Model training), kept per browser and GenAI until changed, which a link's
`?workflowType=machine_learning` sets: the links bench prints carry it (`ui_link`).

A run's name is what the runs table lists (`lora r=8 · minilm · tweets · s42`); its description
(`mlflow.note.content`, the run page's text) says what it was and, once it ends, its headline result.
Pure functions of plain values, besides the one tag write.
"""

from __future__ import annotations

import math
from typing import Any

from bench.techniques import TECHNIQUES

EXPERIMENT_KIND = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"  # the UI's "model training" experiments: they open on their runs
NOTE = "mlflow.note.content"  # the description the UI shows (and edits) on a run's page
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui --host 127.0.0.1` serves by default
TRAINING_VIEW = "workflowType=machine_learning"  # the UI's "Model training" side, whatever the browser last chose
_GUESSED = ("no_inferred_type",)  # with the `*_inferred` kinds: what the UI guessed, not what someone chose



def mark_training_experiment(client: Any, experiment: Any) -> None:
    """Tag the experiment `custom_model_development`, so the UI opens it on its runs: when it has no kind yet or
    only an inferred one, never over a kind someone chose in the UI (nor over this one: no write then)."""
    from bench.tracking.store import retrying

    if not _chosen(experiment.tags.get(EXPERIMENT_KIND)):
        retrying(lambda: _mark_unless_chosen(client, experiment.experiment_id))


def _mark_unless_chosen(client: Any, experiment_id: str) -> None:
    """One try at the tag, on the kind read afresh. Writers that start together all find no kind and all write
    it; MLflow's upsert reads, then inserts, so all but one may fail on the tag's unique key, and `retrying`
    tries again: by then the kind is there, and the retry writes nothing over it."""
    if not _chosen(client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND)):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, TRAINING_KIND)


def _chosen(kind: str | None) -> bool:
    """A kind someone chose (or bench wrote), not one the UI guessed."""
    return bool(kind) and not kind.endswith("_inferred") and kind not in _GUESSED


def ui_link(experiment_id: str, run_id: str | None = None, *, artifact: str | None = None,
            address: str = UI_ADDRESS) -> str:
    """The page of an experiment's runs, of one run, or of one of its artifacts, in the MLflow UI at `address`
    (`mlflow ui`'s and `bench ui`'s default, or a tracking server's own, `ui_address`), on its model-training side."""
    page = f"/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    page += f"/artifacts/{artifact}" if run_id and artifact else ""
    return f"{address.rstrip('/')}/#{page}?{TRAINING_VIEW}"


def ui_address(uri: str) -> str:
    """Where the UI of the store `uri` is served: a tracking server serves its own; a file store needs `bench ui`,
    which serves it at UI_ADDRESS."""
    from bench.tracking.store import redact_uri

    return redact_uri(uri).rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS


def view_line(uri: str, link: str) -> str:
    """`view: bench ui --uri <store> starts the MLflow UI and opens <link>`: the command that serves the store, and
    the page it opens (a browser opens by itself where there is one); a server's page alone, which is up already."""
    from bench.tracking.store import redact_uri

    if uri.startswith(("http://", "https://")):
        return f"view: {link}"
    return f"view: bench ui --uri {redact_uri(uri)} starts the MLflow UI and opens {link}"


def technique_label(technique: str) -> str:
    """`LoRA`, `QLoRA`, `Full fine-tuning`: a technique as a sentence names it (its module's label); a name the
    registry does not know (`peft-loha`, a technique's title) as it is."""
    known = TECHNIQUES.get(technique)
    return known.label if known else technique


def run_title(*, technique: str, model: str, data: str, seed: Any, rank: int | None) -> str:
    """`lora r=8 · minilm · tweets · s42`: a run's name in the runs table (`technique`: its title, `peft-loha` for a
    peft method; `rank`: None for full fine-tuning)."""
    method = technique if rank is None else f"{technique} r={rank}"
    return " · ".join([method, str(model), str(data), f"s{seed}"])


def run_subject(*, technique: str, model: str, data: str, seed: Any, rank: int | None) -> str:
    """`LoRA r=8 on minilm, tweets (seed 42)`: what a run is, the start of its description."""
    method = technique_label(technique) + ("" if rank is None else f" r={rank}")
    return f"{method} on {model}, {data} (seed {seed})"


def result_note(subject: str, final: dict[str, float]) -> str:
    """`<subject>: test accuracy 0.751, tensor peak 191.8 MiB, 1,967 tokens/s`: a finished run's description,
    from the metrics it logged (each figure where it was logged)."""
    figures = []
    for key, name, form in (("test/accuracy", "test accuracy", "{:.3f}"),
                            ("test/perplexity", "test perplexity", "{:.2f}"),
                            ("eval/accuracy", "validation accuracy", "{:.3f}")):
        if _known(final.get(key)):
            figures.append(f"{name} {form.format(final[key])}")
            if key == "test/accuracy":
                break  # the headline; validation only where no test split was scored
    if _known(final.get("mem/tensor_peak_bytes")):
        figures.append(f"tensor peak {mebibytes(final['mem/tensor_peak_bytes'])}")
    if _known(final.get("train/tokens_per_s")):
        figures.append(f"{final['train/tokens_per_s']:,.0f} tokens/s")
    return f"{subject}: {', '.join(figures) or 'finished'}"


def failed_note(subject: str, *, failure: str, error: str) -> str:
    """A failed or interrupted run's description: what it was, how it ended, the start of the message."""
    message = error if len(error) <= 300 else error[:299] + "…"
    return f"{subject}: {failure}. {message}" if message else f"{subject}: {failure}"


def sweep_title(swept: list[str], sweep_id: str) -> str:
    """`sweep method=full,lora · 3f2a9c01b7e4`: the parent run's name, from the overrides that sweep."""
    grid = " ".join(swept) or "1 cell"
    return f"sweep {grid if len(grid) <= 120 else grid[:119] + '…'} · {sweep_id}"


def sweep_note(*, sweep_id: str, overrides: list[str], swept: list[str], summary: dict[str, int] | None,
               total_cells: int, report: str | None, hint: str) -> str:
    """The parent run's description: the grid, how its cells ended (None: running), where its report is."""
    cells = f"{total_cells} cell{'s' if total_cells != 1 else ''}"
    lines = [f"Sweep `{sweep_id}`: {cells} over `{' '.join(swept) or 'one configuration'}`; each cell is a child "
             f"run below this one.", f"Overrides: `{' '.join(overrides)}`."]
    if summary is None:
        lines.append("Running.")
    else:
        lines.append(f"{summary['finished']} finished, {summary['failed']} failed of {summary['cells']} distinct "
                     "cells.")
        lines.append(f"Report: this run's artifact `{report}`." if report else f"Report: `{hint}`.")
    return "\n\n".join(lines)


def mebibytes(size: float) -> str:
    """`191.8 MiB`, `1.25 GiB`."""
    mib = size / 2**20
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.1f} MiB"


def _known(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)
