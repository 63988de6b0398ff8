"""`bench plan` through the real entry point (`bench.cli.main`): every line of its output against the engine's own
figures, the one-line errors, and the time and cost from a synthetic store of measured throughput."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from plan_store import RTX4090, RUNS, build_store

from bench.cli import main
from bench.plan.cards import CARDS

MIB = 2 ** 20
CATEGORIES = ("params", "buffers", "grads", "optimizer", "activations", "temporaries", "other")
FIT = ("allocator", "reserved", "process")  # the figures that decide a fit, on a GPU
TINY = ["model=tiny-llama", "data.max_length=32", "trainer.batch_size=2"]
LEVERS_LINE = "checkpointing false, optimizer kind adamw, accum steps 1"
CAUSAL_LINE = f"{LEVERS_LINE}, packing false"  # a causal LM's batches: padded (data.packing=false) or packed
# llama-3.2-1b's shipped config (source: config), narrowed so a test traces it in a second
SMALL_1B = ["model=llama-3.2-1b", "model.architecture.num_hidden_layers=2", "model.architecture.hidden_size=128",
            "model.architecture.intermediate_size=256", "model.architecture.num_attention_heads=4",
            "model.architecture.num_key_value_heads=2", "model.architecture.head_dim=32",
            "model.architecture.vocab_size=1024", "data.max_length=16", "trainer.batch_size=1"]


def plan(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, list[str], str]:
    """`bench plan <argv>`: exit code, stdout lines, stderr."""
    code = main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def config(*overrides: str):
    from omegaconf import OmegaConf

    from bench.cli import compose
    from bench.config import RunConfig

    return RunConfig.from_dict(OmegaConf.to_container(compose([*overrides, "output_dir=."]), resolve=True))


_CONFIGS: dict[str, object] = {}


def _model_config(model):
    """The transformers config of a causal LM, read once per model (tiny-llama's reads a tokenizer)."""
    from bench.models.load import model_config, resolve_location

    key = repr(model)
    if key not in _CONFIGS:
        _CONFIGS[key] = model_config(model, resolve_location(model))
    return _CONFIGS[key]


def engine(cfg, batch_size: int | None = None):
    """The engine's plan for a GPU, as the CLI must report it (a causal LM's model config read once)."""
    from bench.models.precision import PlannedDevice
    from bench.plan.engine import plan_memory

    return plan_memory(cfg, device=PlannedDevice("cuda"), batch_size=batch_size, config=_model_config(cfg.model))


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def mib(value: float) -> str:
    return f"{value / MIB:,.2f}"


def test_tiny_llama_every_line_against_the_engine(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """No store: the terms beyond the tensors are uncalibrated, so every figure is the tensor peak, marked so."""
    missing = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, lines, err = plan(capsys, *TINY, "method=lora,full", "--gpu", "rtx4090", "--gpu-memory", "128MiB",
                            "--tracking-uri", missing)
    assert code == 0 and err == ""
    budget = 128 * MIB - int(128 * MIB * 10 / 100)
    assert lines[0] == (f"bench plan: model tiny-llama (tiny), batch 2, 32 tokens per sequence, {CAUSAL_LINE}; "
                        "task causal_lm; planned for cuda (bf16, fused attention)")
    assert lines[1] == (f"memory: rtx4090 with --gpu-memory 128MiB: 128.00 MiB - headroom 10% "
                        f"({mib(128 * MIB - budget)} MiB kept free beyond the predicted process) = {mib(budget)} MiB "
                        "for the process")
    assert lines[2] == "" and cells(lines[3]) == ["technique", "peak MiB", *CATEGORIES, "phase", *FIT, "fits",
                                                  "max batch"]
    plans = {}
    for line, technique in zip(lines[4:6], ("lora", "full"), strict=True):
        cfg = config(*TINY, f"method={technique}")
        plans[technique] = want = engine(cfg)
        row = cells(line)
        assert row[:10] == [technique, mib(want.peak_bytes), *(mib(want.categories[c]) for c in CATEGORIES),
                            want.peak_phase]
        assert row[10:13] == [mib(want.peak_bytes)] * 3  # allocator, reserved, process: no term added
        assert row[13] == ("yes*" if want.peak_bytes <= budget else "no*")
        largest = int(row[14])  # the largest batch that fits, and the next one does not
        assert engine(cfg, largest).peak_bytes <= budget < engine(cfg, largest + 1).peak_bytes
    assert lines[6] == "" and lines[7].startswith("peak: the predicted training tensor peak in MiB (2^20 bytes)")
    assert lines[8].startswith("allocator: the peak torch's allocator holds, the tensor peak plus")
    assert lines[9].startswith(f"fits: process <= {mib(budget)} MiB; *: no stored run measured the terms")
    assert lines[10] == ("peak at: " + "; ".join(f"{t}: {p.peak_module}" for t, p in plans.items()))
    notes = list(dict.fromkeys(note for p in plans.values() for note in p.notes))
    assert lines[11:11 + len(notes)] == [f"note: {note}" for note in notes] and notes
    assert lines[11 + len(notes)] == (f"memory terms (store {missing}): uncalibrated (no MLflow store at "
                                      f"{tmp_path / 'mlflow.db'}): allocator, cache and runtime terms not added")
    assert re.fullmatch(r"planned 2 configurations in \d+\.\d s \(largest batch search included\)", lines[-1])
    assert len(lines) == 13 + len(notes)


def test_the_fit_is_the_process_with_the_stored_runs_terms(capsys: pytest.CaptureFixture, uri: str) -> None:
    """With plan_store's runs the process is the tensor peak plus each term, and the largest batch is the one whose
    process fits the budget."""
    from bench.plan.overhead import overhead_for

    code, lines, _ = plan(capsys, *TINY, "method=lora", "--gpu", "rtx4090", "--gpu-memory", "1GiB",
                          "--tracking-uri", uri)
    assert code == 0
    cfg = config(*TINY, "method=lora")
    terms, want = overhead_for(uri, cfg, device="cuda", gpu=CARDS["rtx4090"].matches, gpu_title="GeForce RTX 4090"), \
        engine(config(*TINY, "method=lora"))
    assert terms.runs and terms.total_bytes > 0  # the premise: this configuration's runs calibrate it
    budget = 1024 * MIB - int(1024 * MIB * 10 / 100)
    _, row = _table(lines)
    allocator = want.peak_bytes + terms.allocator_bytes
    process = allocator + terms.cache_bytes + terms.runtime_bytes
    assert row[10:14] == [mib(allocator), mib(allocator + terms.cache_bytes), mib(process),
                          "yes" if process <= budget else "no"]
    largest = int(row[14])
    assert largest > 0  # the premise: the budget holds the terms and a few rows
    assert engine(cfg, largest).peak_bytes + terms.total_bytes <= budget < engine(cfg, largest + 1).peak_bytes \
        + terms.total_bytes
    assert f"memory terms (store {uri}): {terms.describe()}" in lines


def test_a_config_only_model_every_line_against_the_engine(capsys: pytest.CaptureFixture) -> None:
    code, lines, err = plan(capsys, *SMALL_1B, "method=qlora")
    assert code == 0 and err == ""
    want = engine(config(*SMALL_1B, "method=qlora"))
    assert lines[0] == (f"bench plan: model llama-3.2-1b (config), batch 1, 16 tokens per sequence, {CAUSAL_LINE}; "
                        "task causal_lm; planned for cuda (bf16, fused attention)")
    assert lines[1] == "memory: none given (--gpu or --gpu-memory): fit and largest batch not checked"
    assert lines[2] == "" and cells(lines[3]) == ["technique", "peak MiB", *CATEGORIES, "phase", *FIT]
    assert cells(lines[4])[:10] == ["qlora", mib(want.peak_bytes), *(mib(want.categories[c]) for c in CATEGORIES),
                                    want.peak_phase]
    assert lines[5] == "" and lines[6].startswith("peak: the predicted training tensor peak in MiB")
    assert lines[7].startswith("allocator: ")
    assert lines[8] == f"peak at: qlora: {want.peak_module}"
    assert lines[9:-2] == [f"note: {note}" for note in want.notes] and any("nf4" in note for note in want.notes)
    assert lines[-2].startswith("memory terms (store ")
    assert re.fullmatch(r"planned 1 configuration in \d+\.\d s", lines[-1])


@pytest.mark.parametrize(("argv", "says"), [
    (["--gpu", "rtx5090"], "unknown --gpu 'rtx5090'; valid choices: rtx4090, l4, a100-40g, a100-80g, h100, h200"),
    (["--gpu-memory", "24TB"], "--gpu-memory='24TB' is not a size; write a positive number and GiB, GB, MiB or MB"),
    (["model=nope"], "unknown model 'nope'; valid choices: causal-hub, "),
    (["--headroom", "150%"], "--headroom='150%' is not valid; give a percentage in [0, 100)"),
    (["--tokens", "lots"], "--tokens='lots' is not valid; give a positive number"),
    (["--price-per-hour", "2"], "--price-per-hour needs --tokens"),
    (["--device", "cpu", "--gpu", "l4"], "--gpu l4 names a CUDA card but --device cpu"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["model=causal-hub", "model.hub_id=nobody/no-such-model"],
     "model=causal-hub: cannot read the config of 'nobody/no-such-model'"),
    (["model=tiny-llama", "trainer.bogus=1"], "Could not override 'trainer.bogus'"),
    (["model=tiny-llama", "method=lora,nope"], "unknown method 'nope'; valid choices: "),
    (["model=tiny-llama", "trainer.batch_size=0"], "trainer.batch_size=0 is not valid; it must be > 0"),
])
def test_bad_input_is_one_error_line_and_exit_code_2(capsys: pytest.CaptureFixture, argv: list[str],
                                                      says: str) -> None:
    """Hub lookups are offline in tests (tests/conftest.py), so an unknown hub id fails at once."""
    code, lines, err = plan(capsys, *argv)
    assert code == 2 and lines == []
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {says}"), err
    if "valid choices" in says and "model" in says:
        assert "llama-3.1-8b" in err and "qwen2.5-7b" in err  # the shipped configs are among the choices


def _table(lines: list[str]) -> list[list[str]]:
    start = lines.index("") + 1
    end = lines.index("", start)
    return [cells(line) for line in lines[start:end]]


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """plan_store's store, written once for the tests that only read it."""
    return build_store(tmp_path_factory.mktemp("throughput"))


def test_time_and_cost_from_the_runs_that_measured_the_same_configuration(capsys: pytest.CaptureFixture,
                                                                          uri: str) -> None:
    """A comma list on a lever gives a row each, and each row's time comes from its own lever's runs."""
    code, lines, _ = plan(capsys, *TINY, "method=lora", "trainer.gradient_checkpointing=false,true", "--gpu",
                          "rtx4090", "--gpu-memory", "48MiB", "--tokens", "1e9", "--price-per-hour", "2.5",
                          "--tracking-uri", uri)
    assert code == 0
    header, *rows = _table(lines)
    assert header[:2] == ["technique", "checkpointing"] and header[-3:] == ["tokens/s", "time", "cost"]
    calibration = lines[lines.index(f"calibration (store {uri}):") + 1:-1]
    assert [row[:2] for row in rows] == [["lora", "false"], ["lora", "true"]] and len(calibration) == 2
    for row, line in zip(rows, calibration, strict=True):
        assert line.startswith(f"  lora gradient_checkpointing={row[1]}: ")
        measured = [run for run in RUNS if run.calibrates(technique="lora", checkpointing=row[1] == "true",
                                                          gpu=RTX4090)]
        rate = sum(run.tokens_per_s for run in measured) / len(measured)
        hours = 1e9 / rate / 3600
        assert row[-3:] == [f"{rate:,.0f}", f"{hours:,.2f} h", f"${hours * 2.5:,.2f}"]
        assert f"{len(measured)} run(s): " in line
        assert sorted(re.findall(r"([\w-]+) \([0-9a-f]{8}\)", line)) == sorted(run.name for run in measured)
    # the premise: the run from before the levers counts as one without checkpointing
    assert [len(re.findall(r"\([0-9a-f]{8}\)", line)) for line in calibration] == [2, 1]


def test_a_configuration_no_run_measured_is_uncalibrated_with_the_reason(uri: str) -> None:
    from bench.plan.calibrate import calibrate, load_store
    from bench.plan.cards import CARDS

    store = load_store(uri)
    levers = {"gradient_checkpointing": (False, False), "optimizer": ("adamw", "adamw"), "grad_accum_steps": (1, 1)}
    full = calibrate(store, model="tiny-llama", technique="full", seq_len=32, levers=levers, device="cuda",
                     card=CARDS["rtx4090"])  # full fine-tuning ran on an A100 only
    assert (full.tokens_per_s, full.runs, full.seconds(1e9), full.cost(1e9, 2.5)) == (None, (), None, None)
    assert full.reason == ("no finished run of tiny-llama full at data.max_length=32 on GeForce RTX 4090 with "
                           "these levers")


def test_uncalibrated_without_a_store_and_no_store_is_created(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    missing = tmp_path / "none" / "mlflow.db"
    code, lines, _ = plan(capsys, *TINY, "method=lora", "--gpu", "h100", "--gpu-memory", "48MiB", "--tokens", "5e6",
                          "--tracking-uri", f"sqlite:///{missing}")
    assert code == 0 and not missing.exists() and not missing.parent.exists()
    header, row = _table(lines)
    assert row[-3:] == ["uncalibrated", "-", "-"]
    assert lines[-2] == f"  lora: uncalibrated: no MLflow store at {missing}"


def test_calibration_keeps_devices_and_cards_apart(uri: str) -> None:
    from bench.plan.calibrate import calibrate, load_store
    from bench.plan.cards import CARDS

    store = load_store(uri)
    levers = {"gradient_checkpointing": (False, False), "optimizer": ("adamw", "adamw"), "grad_accum_steps": (1, 1)}
    ask = {"model": "tiny-llama", "technique": "lora", "seq_len": 32, "levers": levers}
    on_cpu = calibrate(store, **ask, device="cpu")
    assert on_cpu.tokens_per_s == 90.0 and [r.split(" ")[0] for r in on_cpu.runs] == ["lora-cpu"]
    a100 = calibrate(store, **ask, device="cuda", card=CARDS["a100-80g"])
    assert a100.tokens_per_s == 5000.0 and a100.seconds(1e6) == 200.0 and a100.cost(1e6, 36.0) == 2.0
    assert calibrate(store, **ask, device="cuda", card=CARDS["a100-40g"]).tokens_per_s is None  # an 80GB run only
    nameless = calibrate(store, **ask, device="cuda")
    assert nameless.tokens_per_s is None and "no card named" in nameless.reason


def test_packing_a_row_each_against_the_engine(capsys: pytest.CaptureFixture) -> None:
    """`data.packing=false,true`: a row each, the packed one traced on a packed batch (every row full, positions
    restarting, no padding mask), each as the engine plans it."""
    code, lines, err = plan(capsys, *TINY, "method=lora", "data.packing=false,true")
    assert code == 0 and err == ""
    assert LEVERS_LINE in lines[0] and "packing" not in lines[0]  # it differs between the rows: a column
    assert cells(lines[3])[:2] == ["technique", "packing"]
    for line, packing in zip(lines[4:6], ("false", "true"), strict=True):
        want = engine(config(*TINY, "method=lora", f"data.packing={packing}"))
        assert cells(line)[:3] == ["lora", packing, mib(want.peak_bytes)]
