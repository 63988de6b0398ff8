"""Deployment cost in the synthetic store (experiment `deploy`): runs that measured the forms their technique can be
served in, as bench.measure.deploy logs it (`deploy/<form>/<figure>`, run-level batches, tag `deploy/forms`), beside
runs that measured nothing. `figures` is the ground truth the deploy report's tests recompute by hand.

A classifier (minilm) and a causal LM (tinyllama): full fine-tuning ships its checkpoint; LoRA its adapter, or the
adapter merged into 16 bits; QLoRA also the merge quantized again to 4 bits; QA-LoRA's merge stays INT4 (measured
in memory, as a note says); DoRA measured nothing (deploy.measure=false), LoftQ's measurement failed. Each figure
moves with the seed (LoRA's seeds 1, 2 and 5, so its mean is not its median), so a mean over seeds is no single
run's value."""

from __future__ import annotations

import math
from pathlib import Path

from report_store import Run, log_runs

DEPLOY_EXPERIMENT = "deploy"
CLASSIFIER, CAUSAL = "minilm", "tinyllama"
FORMS = ("base", "unmerged", "merged16", "merged4", "full")
LATENCY_BATCH, THROUGHPUT_BATCH, NEW_TOKENS = 1, 32, 16
ADAPTER = {"lora": 300e3, "qlora": 310e3, "qalora": 320e3, "dora": 330e3, "loftq": 340e3}
# The tags `bench.measure.deploy` leaves: QA-LoRA's forms are measured in memory; a failed measurement logs no figure.
IN_MEMORY = "QA-LoRA's forms were measured in memory: no load time, and their bytes are the state dict's tensors"
ERROR = "OutOfMemoryError: CUDA out of memory while merging"
TAGS = {"qalora": {"deploy/notes": IN_MEMORY}, "loftq": {"deploy/error": ERROR}}


def _run(model: str, technique: str, seed: int, test: float | None, *, status: str = "FINISHED") -> Run:
    """A run named after what it is, so its deploy metrics find it; `test` None: a causal LM without a label set,
    which logs no accuracy at all."""
    full = technique == "full"
    return Run(model, technique, None if full else 8, None if full else "qv", seed,
               None if test is None else test + 0.01, 4.0e9 if full else 1.5e9, 1000.0, 90e6 if full else
               ADAPTER[technique], status=status, test=test, name=f"{model}-{technique}-{seed}-{status.lower()}")


# (run, the forms it measured); a run with no forms ran with deploy.measure=false.
DEPLOYED: list[tuple[Run, tuple[str, ...]]] = [
    *((_run(CLASSIFIER, "full", seed, 0.84 + 0.01 * seed), ("full",)) for seed in (1, 2)),
    *((_run(CLASSIFIER, "lora", seed, 0.80 + 0.01 * seed), ("base", "unmerged", "merged16")) for seed in (1, 2, 5)),
    *((_run(CLASSIFIER, "qlora", seed, 0.78 + 0.02 * seed), ("base", "unmerged", "merged16", "merged4"))
      for seed in (1, 2)),
    (_run(CLASSIFIER, "qalora", 1, 0.77), ("base", "unmerged", "merged4")),  # measured in memory: no load time
    (_run(CLASSIFIER, "dora", 1, 0.81), ()),  # deploy.measure=false: it must add no row
    (_run(CLASSIFIER, "loftq", 1, 0.79), ()),  # the measurement failed: no row, but a note
    (_run(CLASSIFIER, "lora", 4, 0.50, status="KILLED"), ("base", "unmerged", "merged16")),  # not counted
    *((_run(CAUSAL, "lora", seed, 0.60 + 0.05 * seed), ("base", "unmerged", "merged16")) for seed in (1, 2)),
    (_run(CAUSAL, "qlora", 1, None), ("unmerged", "merged16", "merged4")),  # no label set: perplexity only
]


def causal(run: Run) -> bool:
    return run.model == CAUSAL


def figures(run: Run, form: str) -> dict[str, float]:
    """What `run` logged for `form`, as `deploy/<form>/<name>` without the prefix."""
    step, seed = FORMS.index(form), run.seed
    sizes = {"base": 90e6, "unmerged": run.adapter, "merged16": 91e6, "merged4": 31e6 + seed, "full": 90e6 + seed}
    found = {"bytes": sizes[form] * (10 if causal(run) else 1), **_fidelity(run, form)}
    if run.technique != "qalora":
        found.update({"load_s": 0.2 + 0.1 * step + 0.01 * seed, "load_n": 3})
    found.update(_generation(step, seed) if causal(run) else _classification(step, seed))
    if run.technique == "qalora":  # a rate whose timing interval reached zero: unbounded above
        found["rows_per_s_high"] = math.inf
    return found


def _fidelity(run: Run, form: str) -> dict[str, float]:
    """Accuracy (where the run has a test split's labels), its change and the logit distance from the unmerged
    form, perplexity for a causal LM. The base form is timed only."""
    if form == "base":
        return {}
    seed, found = run.seed, {}
    change = {"unmerged": 0.0, "full": 0.0, "merged16": 0.001 * seed, "merged4": -0.01 - 0.003 * seed}[form]
    if run.test is not None:
        found["accuracy"] = run.test + change
        if form.startswith("merged"):
            found["accuracy_delta"] = change
    # merged forms against the unmerged model; what ships unmerged (adapter, checkpoint) against the trained model
    found["max_abs_logit_diff"] = {"unmerged": 1e-6, "full": 2e-6, "merged16": 0.002, "merged4": 0.1}[form] * seed
    if causal(run):
        found["perplexity"] = 12.0 + 0.1 * seed + 50 * abs(change)
    return found


def _classification(step: int, seed: int) -> dict[str, float]:
    p50 = 5.0 + step + 0.1 * seed
    return {"latency_p50_ms": p50, "latency_p50_ms_low": p50 - 0.2, "latency_p50_ms_high": p50 + 0.3 + 0.01 * seed,
            "latency_p90_ms": 1.5 * p50, "latency_p90_ms_low": 1.4 * p50, "latency_p90_ms_high": 1.7 * p50,
            "rows_per_s": 200.0 - 10 * step + seed, "rows_per_s_low": 195.0 - 10 * step + seed,
            "rows_per_s_high": 204.0 - 10 * step + 2 * seed}


def _generation(step: int, seed: int) -> dict[str, float]:
    ttft, speed = 40.0 + 5 * step + seed, 30.0 - step + 0.5 * seed
    return {"ttft_ms": ttft, "ttft_ms_low": ttft - 2, "ttft_ms_high": ttft + 3, "gen_tokens_per_s": speed,
            "gen_tokens_per_s_low": speed - 1, "gen_tokens_per_s_high": speed + 1.5,
            "decode_tokens_per_s": speed + 5}


def run_level(run: Run) -> dict[str, float]:
    """The run's own deploy/* metrics: the batches, and the scale of its logits."""
    shared = {"deploy/latency_batch": LATENCY_BATCH, "deploy/max_abs_logit": 8.0 + run.seed}
    if causal(run):
        return {**shared, "deploy/new_tokens": NEW_TOKENS}
    return {**shared, "deploy/throughput_batch": THROUGHPUT_BATCH}


def build_deploy(folder: Path, uri: str) -> None:
    """Add experiment `deploy` to the store at `uri`: the runs, then each one's deploy metrics and forms tag."""
    import mlflow
    from mlflow.entities import Metric, RunTag

    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment(DEPLOY_EXPERIMENT, artifact_location=(folder / "deploy").as_uri())
    log_runs(client, experiment_id, [run for run, _ in DEPLOYED], folder=folder, parent=None)
    ids = {found.info.run_name: found.info.run_id for found in client.search_runs([experiment_id])}
    for run, forms in DEPLOYED:
        tags = {**TAGS.get(run.technique, {}), **({"deploy/forms": ",".join(forms)} if forms else {})}
        metrics = {f"deploy/{form}/{name}": value for form in forms for name, value in figures(run, form).items()}
        metrics.update(run_level(run) if forms else {})
        client.log_batch(ids[run.name], metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
