"""A synthetic MLflow store for the report tests, written with mlflow directly (no training), and helpers to
read the report back. The figures here are the ground truth the tests recompute by hand."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

EXPERIMENT, SWEEP = "cmp", "sw1"
FAIR_ID = "fair-minilm-1"  # fair/id of the fair comparison in `fair_store`
EVIL_NAME = "<script>document.title='PWNED'</script>"
EVIL_TARGET = "<img src=x onerror=\"document.title='PWNED'\">"
BASE_MS = 1_750_000_000_000  # 2025-06-15 15:06:40 UTC
ROW_CLASS = "<tr class>"  # not a header any table has
ERROR = "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


GPU = "NVIDIA H100 80GB HBM3"
CATEGORIES = ("params", "buffers", "grads", "optimizer", "activations", "temporaries", "other")
# Share of the tensor peak per category (before the per-seed shift below): full fine-tuning carries gradients
# and optimizer state for every weight, an adapter technique mostly the frozen weights and activations.
SHARES = {"full": (0.24, 0.01, 0.24, 0.36, 0.10, 0.04), "adapter": (0.52, 0.02, 0.01, 0.02, 0.31, 0.09)}
# How far each technique's plan (plan/peak_bytes) is off its measured tensor peak, as a share of it (plus 0.002
# per seed); DoRA's runs logged no plan, like runs from before the planner, and must be left out of the comparison.
PLAN_ERROR = {"full": 0.02, "lora": -0.03, "qlora": 0.07}
# The allocator's own peak (mem/allocator_peak_bytes) as a share of the tensor peak on CPU (on CUDA it is the peak
# allocated), and how far each technique's plan of it (plan/allocator_peak_bytes) is off (plus 0.001 per seed).
# tinybert's runs are from before the allocator instrument: a tensor-level comparison only.
ALLOCATOR_SHARE = {"full": 1.02, "lora": 1.05, "qlora": 1.12}  # any other technique: 1.05
PLAN_ALLOCATOR_ERROR = {"full": 0.01, "lora": -0.02, "qlora": -0.06}


@dataclass
class Run:
    """One synthetic run: what it is, how it ended and what it logged. `peak` is the training tensor peak;
    `rss` the net RSS (derived from the peak on CPU when not given); a `legacy` run logs only the old
    `mem/peak_bytes` (= `peak`), as runs did before the tensor peak existed."""

    model: str
    technique: str
    r: int | None
    targets: str | None
    seed: int
    accuracy: float | None = None
    peak: float | None = None
    tokens_per_s: float | None = None
    adapter: float | None = None
    status: str = "FINISHED"
    name: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    rss: float | None = None
    device: str = "cpu"  # the hw/device tag
    legacy: bool = False
    test: float | None = None  # test/accuracy, logged after training from the held-out split
    lr: float | None = None  # trainer.lr; None: the technique's usual rate
    stage: str = ""  # fair/stage of a fair comparison (tune or final); blank outside one
    params: dict[str, str] = field(default_factory=dict)  # params besides those every run logs
    timing: str = "false"  # timing/shared: false timed alone, true beside another cell, "" untagged (older runs)

    @property
    def gpu(self) -> str | None:
        return GPU if self.device.startswith("cuda") else None

    @property
    def device_name(self) -> str:
        """What the report calls the device: the GPU's name on CUDA."""
        return self.gpu or self.device

    @property
    def key(self) -> tuple:
        return self.model, self.device_name, self.technique, self.r, self.targets

    def at_peak(self) -> dict[str, float]:
        """Bytes per category at the tensor peak; they sum to the peak. Activations grow with the seed, so the
        means over seeds are not the share of the mean by accident."""
        shares = list(SHARES["full" if self.technique == "full" else "adapter"])
        shares[4] += 0.01 * self.seed
        shares[0] -= 0.01 * self.seed
        parts = {name: share * self.peak for name, share in zip(CATEGORIES, shares, strict=False)}
        return {**parts, "other": self.peak - sum(parts.values())}

    @property
    def plan(self) -> float | None:
        """The planned training tensor peak this run logged as plan/peak_bytes; None when it logged none."""
        if self.legacy or self.peak is None or self.technique not in PLAN_ERROR:
            return None
        return self.peak * (1 + PLAN_ERROR[self.technique] + 0.002 * self.seed)

    @property
    def allocator(self) -> float | None:
        """The allocator's own training peak this run logged (mem/allocator_peak_bytes); None when it logged none."""
        if self.legacy or self.peak is None or self.model == "tinybert":
            return None
        if self.gpu:
            return self.extra["mem/peak_allocated_bytes"]
        return self.peak * ALLOCATOR_SHARE.get(self.technique, 1.05)

    @property
    def plan_allocator(self) -> float | None:
        """The planned allocator peak (plan/allocator_peak_bytes); None without a plan or an allocator figure."""
        if self.plan is None or self.allocator is None:
            return None
        return self.allocator * (1 + PLAN_ALLOCATOR_ERROR[self.technique] + 0.001 * self.seed)

    def peak_where(self) -> tuple[str, str]:
        """(module, phase) of the peak: full fine-tuning peaks in the optimizer step, adapters in backward."""
        if self.technique == "full":
            return "optimizer.step", "optimizer"
        return f"BertForSequenceClassification.bert.encoder.layer.{self.seed}.attention", "backward"


def _gpu(reserved: float, allocated: float, nvml: float, energy: float) -> dict[str, float]:
    return {"mem/peak_reserved_bytes": reserved, "mem/peak_allocated_bytes": allocated,
            "mem/peak_nvml_process_bytes": nvml, "gpu/energy_j": energy}


RUNS = [
    # A FINISHED run that was rerun later with the same config: superseded, it must not count.
    Run("minilm", "lora", 8, "qv", 1, 0.50, 9.9e9, 1.0, 1.0, name="lora-rerun-old"),
    Run("minilm", "full", None, None, 1, 0.80, 4.0e9, 1000.0, 90e6, tags={"timeline": "yes"}),
    Run("minilm", "full", None, None, 2, 0.82, 4.2e9, 1100.0, 90e6),
    Run("minilm", "full", None, None, 3, 0.85, 4.1e9, 1050.0, 90e6),
    Run("minilm", "lora", 8, "qv", 1, 0.78, 1.5e9, 1500.0, 300e3),
    Run("minilm", "lora", 8, "qv", 2, 0.80, 1.6e9, 1600.0, 300e3),
    Run("minilm", "lora", 8, "qv", 3, 0.79, 1.55e9, 1550.0, 300e3),
    Run("minilm", "lora", 16, "qv", 1, 0.81, 1.62e9, 1480.0, 600e3),
    Run("minilm", "lora", 16, "qv", 2, 0.83, 1.64e9, 1470.0, 600e3),
    Run("minilm", "lora", 8, "attention", 1, 0.805, 1.58e9, 1450.0, 450e3),
    # QLoRA on CPU: a small tensor peak under a huge RSS (dequantization buffers, allocator caches). By its
    # tensor peak it is on the frontier; by RSS every other configuration would beat it.
    Run("minilm", "qlora", 8, "qv", 1, 0.77, 0.90e9, 900.0, 300e3, rss=20e9),
    Run("minilm", "qlora", 8, "qv", 2, 0.775, 0.92e9, 910.0, 300e3, rss=21e9),
    Run("minilm", "qlora", 8, "qv", 3, 0.78, 0.91e9, 920.0, 300e3, rss=20.5e9),
    Run("minilm", "qlora", 8, "qv", 4, 0.79, 0.93e9, 930.0, 300e3, rss=19.5e9),
    Run("minilm", "dora", 8, "qv", 1, 0.795, 1.7e9, 1200.0, 310e3),
    Run("minilm", "lora", 8, EVIL_TARGET, 1, 0.70, 1.5e9, 1500.0, 300e3, name=EVIL_NAME),
    Run("minilm", "qlora", 64, "qv", 1, status="FAILED", tags={"failure": "oom", "error": ERROR}),
    Run("minilm", "lora", 8, "qv", 4, status="KILLED"),
    Run("tinybert", "lora", 8, "qv", 1, 0.60, 0.2e9, 5000.0, 100e3),
    Run("tinybert", "lora", 8, "qv", 2, 0.62, 0.21e9, 5100.0, 100e3),
    # The same model on a GPU: its own full fine-tuning, so its deltas compare within the device. Its QLoRA beats
    # the CPU's on both axes and its full fine-tuning the CPU's: one frontier over both devices would drop the
    # CPU's. Its DoRA has no LoRA parent on the GPU (only on the CPU), so it has no variant row.
    Run("minilm", "full", None, None, 1, 0.84, 3.0e9, 4000.0, 90e6, device="cuda:0",
        extra=_gpu(3.6e9, 3.1e9, 4.0e9, 2000.0)),
    Run("minilm", "full", None, None, 2, 0.86, 3.1e9, 4100.0, 90e6, device="cuda:0",
        extra=_gpu(3.7e9, 3.2e9, 4.1e9, 2100.0)),
    Run("minilm", "qlora", 8, "qv", 1, 0.78, 0.80e9, 3000.0, 300e3, device="cuda:0",
        extra=_gpu(0.95e9, 0.85e9, 1.40e9, 5000.0)),
    Run("minilm", "qlora", 8, "qv", 2, 0.785, 0.82e9, 3100.0, 300e3, device="cuda:0",
        extra=_gpu(0.97e9, 0.86e9, 1.45e9, 5300.0)),
    Run("minilm", "dora", 8, "qv", 1, 0.80, 1.2e9, 3500.0, 310e3, device="cuda:0",
        extra=_gpu(1.4e9, 1.25e9, 1.9e9, 4000.0)),
]
# Runs from before the tensor peak: only `mem/peak_bytes`, which the report must not show as one.
# They carry no timing/shared tag either: their speed is shown, never compared.
OLD_RUNS = [Run("minilm", "full", None, None, seed, 0.80 + 0.01 * seed, 4.0e9, 1000.0, 90e6, legacy=True, timing="")
            for seed in (1, 2)] + [Run("minilm", "lora", 8, "qv", seed, 0.78, 1.5e9, 1500.0, 300e3, legacy=True,
                                       timing="") for seed in (1, 2)]
TIMELINE_CSV = ("time_s,step,rss_bytes,cuda_allocated_bytes,gpu_util_pct,phase\n"
                "0.0,0,1048576000,0,0,setup\n0.5,1,1073741824,524288000,55.5,train\n"
                "1.0,2,1100000000,530000000,60.0,train\n1.5,3,1090000000,520000000,58.0,eval\n")


def finished_groups(runs: list[Run] = RUNS) -> dict[tuple, list[Run]]:
    """The runs each headline row averages: FINISHED, latest per config (the rerun replaces the old one)."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.status == "FINISHED" and run.name != "lora-rerun-old":
            groups.setdefault(run.key, []).append(run)
    return groups


def _params(run: Run) -> dict[str, str]:
    usual = "5e-05" if run.technique == "full" else "0.002"
    params = {"method.name": run.technique, "method.alpha": "16", "model.name": run.model, "data.name": "tweets",
              "seed": str(run.seed), "trainer.lr": usual if run.lr is None else str(run.lr),
              "output_dir": f"outputs/{run.technique}-{run.seed}-{id(run)}", "tracker.experiment": EXPERIMENT}
    if run.technique != "full":  # as `bench run` logs them: full fine-tuning has no LoRA knobs
        params.update({"method.r": str(run.r), "method.target_modules": str(run.targets)})
    return {**params, **run.params}


def _tags(run: Run, parent: str | None) -> dict[str, str]:
    # The stage is left out on purpose: a final run at the rate and seed a tuning run had repeats its config, and
    # must not make the tuning run a superseded one.
    identity = (run.key, run.seed, run.lr, sorted(run.params.items()))
    config_hash = hashlib.sha256(repr(identity).encode()).hexdigest()[:12]
    tags = {"technique": run.technique, "model": run.model, "dataset": "tweets", "config_hash": config_hash,
            "git_sha": "abc1234", "version/torch": "2.13.0", "version/peft": "0.17.1", "hw/cpu": "Test CPU 9000",
            "hw/device": run.device, **({"hw/gpu": run.gpu} if run.gpu else {}),
            **({"timing/shared": run.timing} if run.timing else {})}
    if run.accuracy is not None and not run.legacy:
        tags["mem/peak_module"], tags["mem/peak_phase"] = run.peak_where()
    if run.stage:  # as the fair comparison tags its runs; a final run trains at the rate chosen for it
        tags.update({"fair/id": FAIR_ID, "fair/stage": run.stage})
        if run.stage == "final":
            tags.update({"fair/lr_chosen": str(run.lr), "fair/chosen_on": "validation"})
    if run.model == "minilm" and parent:  # the sweep's cells: children of its parent run, without the sweep id
        tags["mlflow.parentRunId"] = parent
    return {**tags, **{k: v for k, v in run.tags.items() if k != "timeline"}}


def _metrics(run: Run, start: int) -> list:
    from mlflow.entities import Metric

    loss = [Metric("train/loss", 1.0 / (step + 1) + 0.01 * run.seed, start + step, step) for step in range(1, 9)]
    if run.accuracy is None:
        return loss
    final = {"eval/accuracy": run.accuracy, "train/tokens_per_s": run.tokens_per_s,
             "artifact/adapter_bytes": run.adapter, "train/time_s": 100.0 + run.seed, "eval/f1": run.accuracy - 0.05,
             "params/trainable": run.adapter / 4, "params/trainable_pct": 1.5,
             "mem/weight_bits_per_param": 4.13 if run.technique == "qlora" else 16.0,
             **(_legacy_memory(run) if run.legacy else _memory(run)), **_test(run), **run.extra}
    first_epoch = [Metric("eval/accuracy", run.accuracy - 0.1, start + 1, 4)]  # the last value must win
    return loss + first_epoch + [Metric(k, float(v), start + 9, 8) for k, v in final.items()]


def _test(run: Run) -> dict[str, float]:
    """test/*: the held-out split, evaluated once after training."""
    if run.test is None:
        return {}
    return {"test/accuracy": run.test, "test/f1": run.test - 0.04, "test/loss": 1 - run.test,
            "test/majority_baseline": 0.5}


def _memory(run: Run) -> dict[str, float]:
    """The memory metrics a run logs now: tensor peaks and their split, RSS on CPU, bits per weight."""
    memory = {"mem/tensor_peak_bytes": run.peak, "mem/eval_tensor_peak_bytes": 0.35 * run.peak,
              "mem/model_bits_per_param": {"full": 16.0, "qlora": 5.6}.get(run.technique, 16.4),
              **{f"mem/at_peak/{name}_bytes": value for name, value in run.at_peak().items()},
              **({"plan/peak_bytes": run.plan} if run.plan is not None else {}),
              **({"mem/allocator_peak_bytes": run.allocator} if run.allocator is not None else {}),
              **({"plan/allocator_peak_bytes": run.plan_allocator} if run.plan_allocator is not None else {})}
    if run.gpu is None:  # the process's RSS is the CPU's view; CUDA runs log theirs in `extra`
        net = run.rss if run.rss is not None else 1.6 * run.peak + 3e8
        memory.update({"mem/peak_rss_net_bytes": net, "mem/baseline_rss_bytes": 5e8,
                       "mem/peak_rss_bytes": net + 5e8})
    return memory


def _legacy_memory(run: Run) -> dict[str, float]:
    """What a run logged before the tensor peak: one ambiguous figure (RSS on CPU, reserved on CUDA)."""
    return {"mem/peak_bytes": run.peak}


def build_store(folder: Path, runs: list[Run] = RUNS) -> str:
    """The store: one experiment, a sweep parent, the runs (statuses, times, tags) and a timeline."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(folder / "artifacts").as_uri())
    client.create_experiment("other", artifact_location=(folder / "other").as_uri())
    parent = client.create_run(experiment_id, start_time=BASE_MS, run_name=f"sweep-{SWEEP}", tags={
        "sweep_id": SWEEP, "sweep_role": "parent", "sweep_overrides": "method=full,lora,qlora seed=1,2,3"}).info.run_id
    log_runs(client, experiment_id, runs, folder=folder, parent=parent)
    client.log_metric(parent, "sweep/cells", 16)
    client.set_terminated(parent, "FINISHED", end_time=BASE_MS + (len(runs) + 1) * 60_000)
    return uri


def log_runs(client: object, experiment_id: str, runs: list[Run], *, folder: Path, parent: str | None) -> None:
    """Each run, a minute apart, with its metrics, params and tags, and a timeline where asked."""
    from mlflow.entities import Param, RunTag

    for index, run in enumerate(runs, start=1):
        start = BASE_MS + index * 60_000
        run_id = client.create_run(experiment_id, start_time=start, run_name=run.name or None).info.run_id
        client.log_batch(run_id, metrics=_metrics(run, start), params=[Param(k, v) for k, v in _params(run).items()],
                         tags=[RunTag(k, v) for k, v in _tags(run, parent).items()])
        if "timeline" in run.tags:
            csv = folder / "timeline.csv"
            csv.write_text(TIMELINE_CSV)
            client.log_artifact(run_id, str(csv), "monitor")
        client.set_terminated(run_id, run.status, end_time=start + 30_000)


class _Tables(HTMLParser):
    """Cells of every <table id=...>: (attributes, text) per cell, header titles per table, each row's class."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, dict] = {}
        self._table: dict | None = None
        self._cell: list | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "table" and attributes.get("id"):
            self._table = self.tables.setdefault(attributes["id"], {"headers": [], "rows": [], "classes": []})
        elif self._table is not None and tag == "tr":
            self._table["rows"].append([])
            self._table["classes"].append(attributes.get("class") or "")
        elif self._table is not None and tag in ("td", "th"):
            self._cell = [attributes, "", tag]

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            attributes, text, kind = self._cell
            if kind == "th" and len(self._table["rows"]) == 1:
                self._table["headers"].append(text)
            else:
                self._table["rows"][-1].append((attributes, text))
            self._cell = None


def tables(html: str) -> dict[str, list[dict[str, tuple[dict, str]]]]:
    """{table id: rows as {header: (attributes, text)}}; the key ROW_CLASS holds the row's class."""
    parser = _Tables()
    parser.feed(html)
    return {table_id: [{**dict(zip(t["headers"], row, strict=True)), ROW_CLASS: ({}, css)}
                       for row, css in zip(t["rows"], t["classes"], strict=True) if row]
            for table_id, t in parser.tables.items()}
