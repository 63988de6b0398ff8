"""A fair comparison in the synthetic store (experiment `fair`), as `bench run experiment=fair-minilm` records one:
tuning runs over a grid of learning rates (one seed), final runs at the chosen rate over seeds, and a few untuned
runs beside them. The figures are the ground truth the fair report's tests recompute by hand.

Test accuracies are traps: at every stage the configuration best on test is not the one best on validation, so a
choice made on test would show."""

from __future__ import annotations

from pathlib import Path

from report_store import Run, log_runs

FAIR_EXPERIMENT = "fair"
FAIR_ONLY_EXPERIMENT = "fair-only"  # the same comparison with no untuned run beside it
TECHNIQUES = ("full", "lora", "dora", "qlora")  # the report's order: full; lora and its variants; qlora
_SHAPE = {"full": (None, None, 4.0e9, 1000.0, 90e6), "lora": (8, "qv", 1.5e9, 1500.0, 300e3),
          "dora": (8, "qv", 1.7e9, 1200.0, 310e3), "qlora": (8, "qv", 0.9e9, 900.0, 300e3)}

# Tuning stage, seed 1: learning rate → (validation accuracy, test accuracy).
TUNE = {
    "full": {1e-5: (0.80, 0.86), 3e-5: (0.84, 0.80), 1e-4: (0.82, 0.81), 3e-4: (0.70, 0.72)},
    "lora": {1e-4: (0.74, 0.88), 3e-4: (0.79, 0.80), 1e-3: (0.83, 0.81), 3e-3: (0.81, 0.80)},
    "dora": {1e-4: (0.73, 0.70), 3e-4: (0.80, 0.87), 1e-3: (0.825, 0.80), 3e-3: (0.84, 0.82)},
    "qlora": {1e-4: (0.70, 0.85), 3e-4: (0.78, 0.76), 1e-3: (0.80, 0.79), 3e-3: (0.77, 0.78)},
}
TUNE_SEED_2 = ("full", 3e-5, 0.86, 0.80)  # a second seed at one rate: the curve shows the mean of the two
CHOSEN = {"full": 3e-5, "lora": 1e-3, "dora": 3e-3, "qlora": 1e-3}  # best on validation, as the tuning chose
# Final stage at the chosen rate: seed → (validation accuracy, test accuracy). QLoRA's seed 3 failed, so its seeds
# do not match the others' and its differences take Welch's interval; the rest pair seed by seed.
FINAL = {
    "full": {1: (0.845, 0.83), 2: (0.85, 0.845), 3: (0.838, 0.826)},
    "lora": {1: (0.83, 0.82), 2: (0.835, 0.83), 3: (0.826, 0.812)},
    "dora": {1: (0.842, 0.826), 2: (0.84, 0.838), 3: (0.833, 0.821)},
    "qlora": {1: (0.80, 0.79), 2: (0.81, 0.805)},
}
# Untuned runs beside the comparison, at the usual rates: (technique, alpha, seed, validation, test). LoRA at
# alpha=32 is worse on validation and better on test: DoRA's parent must still be LoRA at alpha=16.
UNTUNED = [("full", 16, 1, 0.82, 0.81), ("full", 16, 2, 0.83, 0.825), ("lora", 16, 1, 0.80, 0.78),
           ("lora", 16, 2, 0.81, 0.79), ("lora", 32, 1, 0.79, 0.85), ("lora", 32, 2, 0.795, 0.86),
           ("dora", 16, 1, 0.805, 0.80), ("dora", 16, 2, 0.812, 0.815)]


def _run(technique: str, seed: int, val: float | None, test: float | None, *, lr: float | None = None,
         stage: str = "", alpha: int = 16, status: str = "FINISHED") -> Run:
    r, targets, peak, speed, adapter = _SHAPE[technique]
    return Run("minilm", technique, r, targets, seed, val, peak, speed, adapter, status=status, test=test, lr=lr,
               stage=stage, params={} if alpha == 16 else {"method.alpha": str(alpha)})


def fair_runs(*, untuned: bool = True) -> list[Run]:
    """Every run of the fair experiment, tuning first, as the comparison runs them; `untuned` adds the runs beside."""
    runs = [_run(t, 1, val, test, lr=lr, stage="tune") for t in TECHNIQUES for lr, (val, test) in TUNE[t].items()]
    technique, lr, val, test = TUNE_SEED_2
    runs.append(_run(technique, 2, val, test, lr=lr, stage="tune"))
    runs += [_run(t, seed, val, test, lr=CHOSEN[t], stage="final") for t in TECHNIQUES
             for seed, (val, test) in FINAL[t].items()]
    runs.append(_run("qlora", 3, None, None, lr=CHOSEN["qlora"], stage="final", status="FAILED"))
    return runs + [_run(t, seed, val, test, alpha=alpha) for t, alpha, seed, val, test in UNTUNED if untuned]


def build_fair(folder: Path, uri: str) -> None:
    """Add the fair experiments to the store at `uri` (made by `report_store.build_store`)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    for name, untuned in ((FAIR_EXPERIMENT, True), (FAIR_ONLY_EXPERIMENT, False)):
        experiment_id = client.create_experiment(name, artifact_location=(folder / name).as_uri())
        log_runs(client, experiment_id, fair_runs(untuned=untuned), folder=folder, parent=None)
