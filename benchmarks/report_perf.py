"""How long `bench report` takes over a big sweep: builds a synthetic MLflow store of 1,000 runs (no training),
then times the report in-process and as a new process. Targets: 5 s in-process for 1,000 runs, store creation
excluded; 15 s as a new process for 10,000 (1.5 ms a run, 5 s at least).

Each figure is given as wall time and as CPU seconds (user + system, of this process or of the child): on a shared
machine the wall time grows with everyone else's work while the CPU time stays what the report itself costs, so the
verdict is on CPU time and the load average is printed beside it.

    python benchmarks/report_perf.py                         # 1,000 runs in a temporary folder
    python benchmarks/report_perf.py --runs 10000 --keep /dev/shm/report-perf   # keep the store (reused) and reports
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {"minilm": 22_700_000, "distilbert-base-uncased": 67_000_000}
RANKS = (4, 8, 16, 32, 64)
TARGETS = ("qv", "attention", "mlp", "all-linear")
STEPS = 60  # train/loss points per run
BUDGET_S = 5.0  # in-process, for 1,000 runs
PROCESS_S_PER_RUN, PROCESS_MIN_S = 15.0 / 10_000, 5.0  # as a new process: 15 s for 10,000 runs
SWEEP = "perf-sweep"


def configurations() -> list[dict]:
    """Full FT, and LoRA / QLoRA at every rank and target preset, for each model."""
    configs = []
    for model in MODELS:
        configs.append({"model": model, "technique": "full", "r": 8, "targets": "qv"})
        configs += [{"model": model, "technique": t, "r": r, "targets": targets}
                    for t in ("lora", "qlora") for r in RANKS for targets in TARGETS]
    return configs


def run_record(config: dict, seed: int, rng: random.Random) -> tuple[dict, dict, dict]:
    """Params, tags and final metrics shaped like `bench run`'s, with plausible numbers."""
    full = config["technique"] == "full"
    total = MODELS[config["model"]]
    trainable = total if full else config["r"] * 1536 * (2 if config["targets"] == "qv" else 6) * 6 + 2307
    peak = total * (16 if full else 2.6 if config["technique"] == "lora" else 1.1) + rng.uniform(0, 4e7)
    params = {"method.name": config["technique"], "method.r": config["r"], "method.alpha": 2 * config["r"],
              "method.dropout": 0.05, "method.target_modules": config["targets"], "method.bias": "none",
              "method.dtype": "auto", "trainer.lr": 5e-5 if full else 2e-3, "trainer.epochs": 2,
              "trainer.batch_size": 16, "data.name": "tweets", "data.max_length": 128, "model.name": config["model"],
              "seed": seed, "output_dir": f"outputs/sweeps/x/{seed}", "tracker.experiment": "perf"}
    tags = {"technique": config["technique"], "model": config["model"], "dataset": "tweets", "git_sha": "abc1234",
            "version/torch": "2.13.0", "version/peft": "0.17.1", "version/mlflow": "3.17.2", "hw/cpu": "Xeon",
            "hw/device": "cuda:0", "hw/gpu": "H100", "mem/peak_phase": "optimizer" if full else "backward",
            "mem/peak_module": "optimizer.step" if full else "BertModel.encoder.layer.5.attention"}
    metrics = {"eval/accuracy": min(0.95, 0.70 + 0.01 * (full * 4 + config["r"] ** 0.3) + rng.gauss(0, 0.01)),
               "eval/f1": 0.68 + rng.gauss(0, 0.01), "eval/loss": 0.6 + rng.gauss(0, 0.02),
               "train/time_s": 100 + rng.uniform(0, 20), "train/tokens_per_s": 9000 * (0.7 if full else 1.0),
               "params/trainable": trainable, "params/total": total, "params/trainable_pct": 100 * trainable / total,
               "mem/weight_bits_per_param": 4.13 if config["technique"] == "qlora" else 16,
               "mem/model_bits_per_param": 5.6 if config["technique"] == "qlora" else 16.2,
               "artifact/adapter_bytes": trainable * (2 if full else 4), **_memory(peak, full, rng)}
    return params, tags, metrics


def _memory(peak: float, full: bool, rng: random.Random) -> dict[str, float]:
    """The tensor peak and its split by category (the report's breakdown), and the process's own figures."""
    shares = (0.25, 0.01, 0.24, 0.36, 0.09, 0.04) if full else (0.5, 0.02, 0.01, 0.02, 0.33, 0.1)
    parts = dict(zip(("params", "buffers", "grads", "optimizer", "activations", "temporaries"), shares, strict=True))
    split = {f"mem/at_peak/{name}_bytes": share * peak for name, share in parts.items()}
    return {"mem/tensor_peak_bytes": peak, "mem/eval_tensor_peak_bytes": 0.4 * peak, **split,
            "mem/at_peak/other_bytes": peak - sum(split.values()), "mem/peak_allocated_bytes": 1.05 * peak,
            "mem/peak_reserved_bytes": 1.2 * peak + rng.uniform(0, 4e7),
            "mem/peak_nvml_process_bytes": 1.2 * peak + 5e8}


def build_store(folder: Path, runs: int) -> str:
    """`runs` runs in a fresh SQLite store: 1.6 % failed, the rest finished with a loss history."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("perf", artifact_location=(folder / "artifacts").as_uri())
    configs, rng, now = configurations(), random.Random(0), int(time.time() * 1000)
    parent = client.create_run(experiment_id, start_time=now - runs * 60_000, run_name=f"sweep-{SWEEP}", tags={
        "sweep_id": SWEEP, "sweep_role": "parent", "sweep_overrides": "sweep=paper seed=range(12)"}).info.run_id
    for index in range(runs):
        config, seed = configs[index % len(configs)], index // len(configs)
        params, tags, final = run_record(config, seed, rng)
        start = now - (runs - index) * 60_000
        run = client.create_run(experiment_id, start_time=start, run_name=f"{config['technique']}-{index}")
        failed = index % 61 == 60
        metrics = [Metric("train/loss", 1.1 * 0.97 ** step + rng.gauss(0, 0.02), start + step, step)
                   for step in range(STEPS // (4 if failed else 1))]
        metrics += [] if failed else [Metric(k, float(v), start + STEPS, STEPS) for k, v in final.items()]
        tags = {**tags, "mlflow.parentRunId": parent,  # a sweep's cell, as `bench run -m` records it
                **({"failure": "oom", "error": "OutOfMemoryError: CUDA out of memory"} if failed else {})}
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        if index % 10 == 0:  # the resource monitor's timeline on some runs, as a future monitor logs it
            client.log_artifact(run.info.run_id, str(_timeline(folder, rng)), "monitor")
        client.set_terminated(run.info.run_id, "FAILED" if failed else "FINISHED", end_time=start + 50_000)
    client.set_terminated(parent, "FINISHED", end_time=now)
    return uri


def _timeline(folder: Path, rng: random.Random) -> Path:
    """A monitor timeline CSV: 600 samples of process and CUDA memory and GPU utilisation."""
    path = folder / "timeline.csv"
    rows = ["time_s,step,rss_bytes,cuda_allocated_bytes,cuda_reserved_bytes,gpu_util_pct"]
    rows += [f"{i * 0.5},{i // 10},{2e9 + rng.uniform(0, 1e8):.0f},{1e9 + i * 1e6:.0f},{2e9 + i * 1e6:.0f},"
             f"{rng.uniform(40, 99):.1f}" for i in range(600)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _open_store(uri: str) -> None:
    """Import MLflow's SQL store and connect once, as building the store would have: a per-process cost that
    the new-process figure below includes."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.MlflowClient(uri).search_experiments()


def _scratch() -> Path:
    """A fresh folder, in memory where the machine has /dev/shm: SQLite commits there cost no disk syncs, so
    the store builds about twice as fast; the report reads the same pages either way."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="bench-report-perf-", dir=shm if shm.is_dir() else None))


def main() -> int:
    """Build the store (or reuse a kept one), time the report in-process and as the real command."""
    from bench.report.build import build_report

    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--runs", type=int, default=1000)
    args.add_argument("--keep", type=Path, help="build the store here (reused if it is there) and keep it")
    options = args.parse_args()
    folder = options.keep or _scratch()
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    if not (folder / "mlflow.db").is_file():
        started = time.perf_counter()
        build_store(folder, options.runs)
        print(f"store: {options.runs} runs in {time.perf_counter() - started:.1f} s ({uri})")
    _open_store(uri)
    cpu = time.process_time()
    built = build_report(uri=uri, experiment=None, sweep_id=SWEEP, out=folder / "report")
    cpu = time.process_time() - cpu
    print(f"build_report --sweep {SWEEP}: {built.seconds:.2f} s wall, {cpu:.2f} s CPU for {built.runs} runs, "
          f"{built.configurations} configurations (in-process; store creation and imports excluded)")
    wall, child = _new_process(uri, folder / "report-cli")
    print(f"bench report --sweep {SWEEP} as a new process (interpreter and imports included): {wall:.2f} s wall, "
          f"{child:.2f} s CPU; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if not options.keep:
        shutil.rmtree(folder, ignore_errors=True)
    limit = max(PROCESS_MIN_S, PROCESS_S_PER_RUN * built.runs)
    ok = cpu <= BUDGET_S * built.runs / 1000 and child <= limit
    print(f"{'OK' if ok else 'TOO SLOW'}: budgets {BUDGET_S:.0f} s per 1,000 runs in-process, {limit:.1f} s as a new "
          f"process, on CPU time")
    return 0 if ok else 1


def _new_process(uri: str, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the real command in a fresh interpreter."""
    command = [sys.executable, "-m", "bench.cli", "report", "--sweep", SWEEP, "--tracking-uri", uri, "--out", str(out)]
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


if __name__ == "__main__":
    sys.exit(main())
