"""What cannot run distributed is refused in one line before any process starts; `bench plan` predicts what each
rank holds."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from support import TINY, assert_one_error_line, run_cli_here

from bench.cli import compose
from bench.config import RunConfig
from bench.models.precision import PlannedDevice
from bench.plan.engine import plan_memory


@pytest.mark.parametrize(("overrides", "needles"), [
    (["trainer.nproc=2"], ("trainer.nproc=2", "trainer.strategy=ddp", "trainer.strategy=fsdp")),
    (["trainer.strategy=horovod"], ("trainer.strategy='horovod'", "single, ddp, fsdp")),
    (["trainer.strategy=ddp", "trainer.nproc=0"], ("trainer.nproc=0", "> 0")),
    (["method=qlora", "trainer.strategy=fsdp", "trainer.nproc=2"], ("method=qlora", "fsdp", "strategy=ddp")),
    (["trainer.strategy=fsdp", "trainer.nproc=2", "trainer.optimizer=adamw_8bit"],
     ("trainer.optimizer=adamw_8bit", "fsdp", "trainer.optimizer=adamw")),
])
def test_a_combination_that_cannot_work_is_one_line(overrides: list[str], needles: tuple[str, ...], tmp_path) -> None:
    result = run_cli_here(*TINY, *overrides, f"tracker.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                          f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_error_line(result, *needles)
    assert not (tmp_path / "mlflow.db").exists()  # refused before a run (or a process) started


def _plan(*overrides: str):
    raw = OmegaConf.to_container(compose([*TINY, "method=full", "method.dtype=fp32", *overrides, "output_dir=."]),
                                 resolve=True)
    return plan_memory(RunConfig.from_dict(raw), device=PlannedDevice("cpu"))


def test_plan_shards_parameters_gradients_and_optimizer_state_at_n_ranks() -> None:
    single, ddp = _plan(), _plan("trainer.strategy=ddp", "trainer.nproc=4")
    # every DDP rank holds what one process holds at its batch, plus the gradient buckets (all the gradients' size)
    buckets = max(found["grads"] for found in single.phases.values())
    assert buckets > 0
    assert ddp.categories == {**single.categories, "grads": single.categories["grads"] + buckets}
    fsdp = _plan("trainer.strategy=fsdp", "trainer.nproc=4")
    alone = single.phases["forward"]
    unit = fsdp.phases["forward"]["params"] - -(-alone["params"] // 4)  # the largest unit, gathered whole
    # tiny-bert's largest unit is its root: the embeddings (30,522 x 64 words), positions and the head, in fp32
    assert 30522 * 64 * 4 < unit < 1.1 * 30522 * 64 * 4
    for phase, held in single.phases.items():  # every phase of the step, sharded the same way
        sharded = fsdp.phases[phase]
        assert sharded["params"] == -(-held["params"] // 4) + unit
        assert sharded["temporaries"] == held["temporaries"] + unit  # the all-gather's buffer
        for name in ("grads", "optimizer"):
            assert sharded[name] == -(-held[name] // 4)
        assert sharded["activations"] == held["activations"]
    # the peak is the highest phase once sharded: the optimizer's step shrinks most
    assert fsdp.peak_bytes == max(sum(found.values()) for found in fsdp.phases.values())
    assert fsdp.categories == fsdp.phases[fsdp.peak_phase]
    assert any("fsdp at 4 ranks" in note for note in fsdp.notes)


def test_slurm_asks_for_one_task_with_nproc_gpus_per_cell() -> None:
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed (pip install 'bench[cluster]')")
    config = compose(["hydra/launcher=slurm", "trainer.strategy=fsdp", "trainer.nproc=4", "output_dir=."],
                     return_hydra_config=True)
    launcher = config.hydra.launcher
    # one task per cell: its process starts torchrun, which starts the 4 ranks on the task's node
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 1, 1)
